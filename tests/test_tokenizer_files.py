"""A model directory without tokenizer files is refused at load, naming what is missing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import save_tiny

from circuit_atlas import ReplacementModel
from circuit_atlas.transcoders.io import save_transcoders
from circuit_atlas.transcoders.random import random_transcoders

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def untokenized(tmp_path_factory):
    from transformers import AutoConfig

    tmp = tmp_path_factory.mktemp("untokenized")
    model_dir = Path(save_tiny(tmp / "model", "gpt2"))
    for name in os.listdir(model_dir):
        if "token" in name:
            os.remove(model_dir / name)
    cfg = AutoConfig.from_pretrained(model_dir)
    save_transcoders(random_transcoders("plt", cfg.n_layer, cfg.n_embd, 16), tmp / "tc")
    return model_dir, tmp / "tc"


def test_python_api_names_the_missing_files(untokenized):
    model_dir, tc = untokenized
    with pytest.raises(ValueError, match="has no tokenizer files .*tokenizer.json.*tokenizer.save_pretrained"):
        ReplacementModel.from_pretrained(model_dir, tc)


def test_training_loader_names_the_missing_files(untokenized):
    from circuit_atlas.training import load_causal_lm

    with pytest.raises(ValueError, match="has no tokenizer files"):
        load_causal_lm(untokenized[0])


@pytest.mark.parametrize("command", ["trace", "intervene"])
def test_cli_says_tokenizer_not_empty_prompt(untokenized, tmp_path, command):
    model_dir, tc = untokenized
    extra = ["--out", str(tmp_path / "g.safetensors")] if command == "trace" else ["--set", "0:-1:1=1"]
    r = subprocess.run([sys.executable, "-m", "circuit_atlas", command, "--model", str(model_dir), "--transcoders",
                        str(tc), "--prompt", "the capital of Texas is", *extra],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 2
    assert "has no tokenizer files" in r.stderr and "prompt is empty" not in r.stderr
