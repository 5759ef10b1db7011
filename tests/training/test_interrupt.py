"""Ctrl-C during train-transcoders: a checkpoint, one line saying how to resume, and --resume continues it.

The real thing: the command runs in a subprocess and gets a real SIGINT while it trains.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from circuit_atlas.training import TrainConfig, train_transcoders

REPO = Path(__file__).resolve().parents[2]
LOG_PREFIXES = ("setup:", "start:", "loop:", "finish:")  # what -v logs


def _settings(steps: int) -> dict:
    # checkpoint_every=1000: a first regular checkpoint far beyond the steps this test reaches
    return dict(width=48, steps=steps, batch_tokens=256, seq_len=16, lr_warmup_steps=2, eval_tokens=256,
                checkpoint_every=1000, target_l0=6)  # fmt: skip


def _flags(settings: dict) -> list[str]:
    return [x for key, value in settings.items() for x in ("--" + key.replace("_", "-"), str(value))]


def test_ctrl_c_checkpoints_and_says_in_one_line_how_to_resume(tmp_path, model_dir, data_file, caplog):
    out = tmp_path / "tc"
    settings = _settings(steps=100_000)
    cmd = [sys.executable, "-m", "circuit_atlas.training", "-v", "--no-progress", "--model", str(model_dir),
           "--data", str(data_file), "--out", str(out), *_flags(settings)]  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(180, proc.kill)  # fail, not hang, if it never logs the start or never stops
    watchdog.start()
    try:
        seen = []
        for line in proc.stderr:  # -v logs "loop: from step 0 to ..." as the training steps start
            seen.append(line)
            if line.startswith("loop: from step 0"):
                break
        else:
            raise AssertionError("training never started:\n" + "".join(seen))
        time.sleep(1.0)  # a few steps
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        watchdog.cancel()
        proc.kill()
    lines = stderr.splitlines()
    said = [line for line in lines if not line.startswith(LOG_PREFIXES)]
    assert proc.returncode == 130 and stdout == ""
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert len(said) == 1, stderr
    state = json.loads((tmp_path / "tc.checkpoint" / "state.json").read_text())
    step = state["step"]
    assert 1 <= step < 1000  # saved on the interrupt, before the first regular checkpoint
    assert said[0] == (f"circuit-atlas: interrupted at step {step} of 100000; checkpoint saved to "
                       f"{tmp_path / 'tc.checkpoint'}: run the same command with --resume to continue")  # fmt: skip
    assert not out.exists()

    # --resume continues from that step, where an uninterrupted run would be (up to float rounding
    # between the two processes' thread counts)
    cfg = TrainConfig(**settings)
    with caplog.at_level(logging.INFO, logger="circuit_atlas.training.trainer"):
        resumed = train_transcoders(model_dir, data_file, out, cfg, resume=True, stop_at_step=step + 2,
                                    progress=False)  # fmt: skip
    assert f"resumed from {tmp_path / 'tc.checkpoint'} at step {step}" in caplog.text
    assert resumed.step == step + 2 and not resumed.interrupted
    straight = train_transcoders(model_dir, data_file, tmp_path / "straight", cfg, stop_at_step=step + 2,
                                 progress=False)  # fmt: skip
    assert straight.step == step + 2
    a = load_file(str(tmp_path / "tc.checkpoint" / "state.safetensors"))
    b = load_file(str(tmp_path / "straight.checkpoint" / "state.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)
