"""torchrun with 2 CPU processes (gloo) shards the corpus and merges to the single-process result."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from circuit_atlas.features.dashboards import load_dashboard, open_dashboards

REPO = Path(__file__).resolve().parents[3]


def test_torchrun_two_processes_equals_one(tmp_path, data_file, plt_dir, config):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    flags = []
    for key in ("seq_len", "batch_size", "top_k", "sample_size", "bands", "band_examples", "context_before",
                "context_after", "checkpoint_every"):  # fmt: skip
        flags += ["--" + key.replace("_", "-"), str(getattr(config, key))]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "circuit_atlas.features", "build", "--model", "toyworld", "--transcoders", "toyworld-plt",
               "--data", str(data_file), "--out", str(tmp_path / "ddp"), "--no-progress", *flags]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("dashboards written") == 1  # rank 0 alone writes
    ddp, single = load_file(str(tmp_path / "ddp" / "state.safetensors")), load_file(str(plt_dir / "state.safetensors"))
    assert ddp.keys() == single.keys()
    for key in ddp:  # counts, histograms, chosen examples and their contexts: identical
        if ddp[key].is_floating_point():
            torch.testing.assert_close(ddp[key], single[key], rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(ddp[key], single[key]), key
    assert open_dashboards(tmp_path / "ddp").info["n_tokens"] == open_dashboards(plt_dir).info["n_tokens"]
    dash = open_dashboards(plt_dir)
    for layer, f in dash.con.execute("SELECT layer, idx FROM features ORDER BY count DESC LIMIT 5").fetchall():
        assert load_dashboard(tmp_path / "ddp", layer, f).to_json() == load_dashboard(plt_dir, layer, f).to_json()
