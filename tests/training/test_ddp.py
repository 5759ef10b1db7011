"""Data-parallel training under torchrun (2 CPU processes, gloo) equals the single-process run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from circuit_atlas.training import TrainConfig, train_transcoders
from circuit_atlas.transcoders import load_transcoders

REPO = Path(__file__).resolve().parents[2]
SETTINGS = dict(
    kind="clt",
    skip=True,
    width=48,
    steps=6,
    batch_tokens=256,
    seq_len=16,
    lr_warmup_steps=2,
    eval_tokens=256,
    checkpoint_every=3,
    target_l0=6,
    sparsity_warmup=0.2,
    pack_documents=False,
)  # fmt: skip  (unpacked: the two halves hold different token counts)


def _flags(settings: dict) -> list[str]:
    flags = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def test_torchrun_two_processes_equals_one(model_dir, data_file, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "circuit_atlas.training", "--model", str(model_dir), "--data", str(data_file),
               "--out", str(tmp_path / "ddp"), "--no-progress", *_flags(SETTINGS)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("transcoders and metrics.json written to") == 1  # rank 0 alone writes
    single = train_transcoders(model_dir, data_file, tmp_path / "single", TrainConfig(**SETTINGS), progress=False)

    ddp_metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp_metrics["world_size"] == 2 and single.metrics["world_size"] == 1
    a, b = load_transcoders(tmp_path / "ddp"), load_transcoders(tmp_path / "single")
    # Each process averages its half of the batch and DDP averages the two gradients: the same update
    # up to float summation order (observed differences ~3e-8 after 6 Adam steps).
    for key in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip"):
        for x, y in zip(getattr(a, key), getattr(b, key)):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=key)
    assert abs(ddp_metrics["fvu_mean"] - single.metrics["fvu_mean"]) < 1e-4
    assert not (tmp_path / "ddp.checkpoint").exists()
