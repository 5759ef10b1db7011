"""train-transcoders on a real model and a real corpus: SmolLM2-135M on the Debian Reference.

CPU-sized (the GPU recipe is in the README): per kind, a 1-step run and a longer run from the same
seed, through the command line; the longer run's held-out reconstruction error (FVU) must be clearly
lower, and both write metrics.json with every layer's figures.
"""

from __future__ import annotations

import json

import pytest
from corpus import debian_reference_text
from models import real_model_dir

from circuit_atlas.cli import main

STEPS = {"plt": 16, "clt": 10}
COMMON = ["--width", "128", "--batch-tokens", "128", "--seq-len", "32", "--lr-warmup-steps", "2",
          "--eval-tokens", "256", "--sparsity-warmup", "0.5", "--no-progress"]  # fmt: skip


def _train(tmp_path, kind: str, steps: int) -> dict:
    out = tmp_path / f"{kind}-{steps}"
    argv = ["train-transcoders", "--model", str(real_model_dir("smollm2")), "--data", str(debian_reference_text()),
            "--out", str(out), "--kind", kind, "--steps", str(steps), *COMMON]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["fvu"]) == 30 and len(metrics["l0"]) == 30  # every layer of SmolLM2
    assert metrics["kind"] == kind and metrics["steps"] == steps
    return metrics


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_short_training_run_lowers_the_loss(tmp_path, kind):
    start = _train(tmp_path, kind, 1)
    end = _train(tmp_path, kind, STEPS[kind])
    print(
        f"{kind}: FVU {start['fvu_mean']:.3f} after 1 step -> {end['fvu_mean']:.3f} after {STEPS[kind]}; L0 {end['l0_mean']:.1f}"
    )
    assert end["fvu_mean"] < 0.8 * start["fvu_mean"], (start["fvu_mean"], end["fvu_mean"])
    assert 0 < end["l0_mean"] <= 128
