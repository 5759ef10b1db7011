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


def test_intervene_on_the_toy_world():
    prompt = "The capital of the state containing Dallas is"
    r = _cli("intervene", "--model", "toyworld", "--transcoders", "toyworld-clt", "--prompt", prompt,
             "--scale", "0:9:67=-2", "--scale", "0:-1:917=-2", "--mode", "frozen_attention", "--generate", "3")  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["before", "after"]
    assert lines[2].startswith("' Austin'")  # clean top-1
    assert "generated before: ' Austin" in r.stdout


def test_intervene_bad_spec_is_one_clear_error():
    r = _cli("intervene", "--model", "toyworld", "--transcoders", "toyworld-clt", "--prompt", "x", "--set", "2:-1=3")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "circuit-atlas: error: cannot read intervention '2:-1=3'; write LAYER:POSITION:FEATURE=NUMBER, e.g. "
        "2:-1:432=0 (POSITION: an int, 'all', or '5+' for 5 onwards)"
    ]
    r = _cli("intervene", "--model", "toyworld", "--transcoders", "toyworld-clt", "--prompt", "The capital of",
             "--set", "9:-1:3=1")  # fmt: skip
    assert r.returncode == 2 and "layer 9 does not exist" in r.stderr
