"""The command line, run as a user would: real files, real subprocess."""

import subprocess
import sys

from tiny import save_tiny

from circuit_atlas.transcoders.io import save_transcoders
from circuit_atlas.transcoders.random import random_transcoders


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "circuit_atlas", *args], capture_output=True, text=True, cwd=cwd)


def test_trace_writes_graph_and_summary(tmp_path):
    from transformers import AutoConfig

    from circuit_atlas import Graph

    model_dir = save_tiny(tmp_path / "model", "gpt2")
    cfg = AutoConfig.from_pretrained(model_dir)
    save_transcoders(random_transcoders("plt", cfg.n_layer, cfg.n_embd, 32, skip=True), tmp_path / "tc")
    out = tmp_path / "g.safetensors"
    r = _cli("trace", "--model", str(model_dir), "--transcoders", str(tmp_path / "tc"),
             "--prompt", "the capital of Texas is", "--out", str(out), "--json-dir", str(tmp_path / "json"),
             "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "top logits:" in r.stdout and "scores: replacement" in r.stdout and "nodes" in r.stdout
    g = Graph.load(str(out))
    assert g.count("logit") >= 1 and (tmp_path / "json" / "g.json").is_file()


def test_trace_bad_model_dir_is_one_clear_error(tmp_path):
    r = _cli("trace", "--model", str(tmp_path / "missing"), "--transcoders", str(tmp_path),
             "--prompt", "x", "--out", str(tmp_path / "g.safetensors"))  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().startswith("circuit-atlas: error:") and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr
