"""Transcoders of another model are refused: by what their files record, and by how badly they reconstruct."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.interventions import scale_by
from circuit_atlas.transcoders.io import load_transcoders
from circuit_atlas.transcoders.match import names_match
from circuit_atlas.zoo import ZOO_DIR, resolve_transcoders

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "The capital of the state containing Dallas is"


def _same_shaped_model(path: Path) -> Path:
    """A Llama with the toy world's config and tokenizer but other (random) weights, saved at `path`."""
    from transformers import AutoConfig, LlamaForCausalLM

    toy = ZOO_DIR / "toyworld" / "model"
    torch.manual_seed(0)
    LlamaForCausalLM(AutoConfig.from_pretrained(toy)).save_pretrained(path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(toy / f, path / f)
    return path


@pytest.fixture(scope="module")
def other_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    mine = _same_shaped_model(root / "my-llama")
    # The same other weights under the toy world's name: only the numerical check can tell.
    renamed = root / "toyworld"
    shutil.copytree(mine, renamed)
    return mine, renamed


def test_recorded_model_name_is_checked_at_load(other_models):
    mine, _ = other_models
    with pytest.raises(ValueError) as err:
        ReplacementModel.from_pretrained(mine, "toyworld-clt")
    message = str(err.value)
    assert "trained on model 'toyworld'" in message and "my-llama" in message and "allow_model_mismatch" in message
    model = ReplacementModel.from_pretrained(mine, "toyworld-clt", allow_model_mismatch=True)  # the override
    assert model.transcoders.n_layers == 4


def test_reconstruction_is_checked_on_the_prompt(other_models):
    _, renamed = other_models
    model = ReplacementModel.from_pretrained(renamed, "toyworld-clt")  # the name matches
    with pytest.raises(ValueError, match=r"do not fit model .*reconstruction error is .* times"):
        attribute(model, PROMPT, progress=False)
    for mode in ("free", "frozen_attention"):
        with pytest.raises(ValueError, match="do not fit model"):
            model.intervene(PROMPT, [scale_by((0, 1), 2.0, position=-1)], mode=mode)
    forced = ReplacementModel.from_pretrained(renamed, "toyworld-clt", allow_model_mismatch=True)
    assert attribute(forced, PROMPT, max_feature_nodes=10, progress=False).count("logit") >= 1


def test_the_right_set_passes_even_on_text_outside_its_world():
    model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    for prompt in (PROMPT, "zzzz qqq !!! ###", "1 2 3 4 5 6 7 8 9", "x"):
        model.run(model.tokenize(prompt))  # raises if the check misfires
    assert model.transcoders.metadata["metrics"]["fvu_mean"] < 0.05  # metrics.json is read with the set


def test_recorded_fingerprint_is_checked():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    toy = ZOO_DIR / "toyworld" / "model"
    tc = load_transcoders(resolve_transcoders("toyworld-clt"))
    tc.metadata["model_fingerprint"] = {"architecture": "llama", "n_layers": 4, "d_model": 128, "vocab_size": 50257}
    hf, tok = AutoModelForCausalLM.from_pretrained(toy), AutoTokenizer.from_pretrained(toy)
    with pytest.raises(ValueError, match=r"vocab_size 50257 vs 1857"):
        ReplacementModel(hf, tok, tc, name="toyworld")


def test_names_match_loosely():
    assert names_match("toyworld", ["/x/circuit_atlas/zoo/toyworld/model"])
    assert names_match("out/gpt2", ["/home/me/out/gpt2/"])
    assert names_match("google/gemma-2-2b", ["/cache/models--google--gemma-2-2b/snapshots/0123abc"])
    assert not names_match("toyworld", ["/tmp/my-gpt2"])


def test_cli_refuses_and_overrides(other_models, tmp_path):
    mine, _ = other_models

    def cli(*extra):
        return subprocess.run([sys.executable, "-m", "circuit_atlas", "trace", "--model", str(mine), "--transcoders",
                               "toyworld-clt", "--prompt", PROMPT, "--out", str(tmp_path / "g.safetensors"),
                               "--max-feature-nodes", "10", "--no-progress", *extra],
                              capture_output=True, text=True, cwd=ROOT)  # fmt: skip

    r = cli()
    assert r.returncode == 2
    assert r.stderr.strip() == r.stderr.strip().splitlines()[0]  # one line: refused before the weights load
    assert r.stderr.startswith("circuit-atlas: error: transcoders 'toyworld-clt' were trained on model 'toyworld'")
    assert "--allow-model-mismatch" in r.stderr and not (tmp_path / "g.safetensors").exists()
    r = cli("--allow-model-mismatch")
    assert r.returncode == 0, r.stderr


def test_recorded_hook_sites_are_checked():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    toy = ZOO_DIR / "toyworld" / "model"
    tc = load_transcoders(resolve_transcoders("toyworld-clt"), input_hook="ln2.hook_normalized")
    hf, tok = AutoModelForCausalLM.from_pretrained(toy), AutoTokenizer.from_pretrained(toy)
    with pytest.raises(ValueError, match="trained with input_hook 'hook_resid_mid' but are set to read"):
        ReplacementModel(hf, tok, tc, name="toyworld")
