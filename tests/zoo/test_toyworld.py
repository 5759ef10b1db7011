"""The shipped toy world meets the issue's quality floors (measured here, not read from metrics.json).

Model: one-hop 100 %, two-hop on held-out cities >= 95 %, opposites >= 95 % in each language.
Transcoders (PLT and CLT): normalized MSE <= 0.10 at mean L0 <= 32 in every layer, and the
replacement model agrees with the real model's top-1 next token on >= 90 % of held-out positions.
"""

import functools
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from circuit_atlas import ReplacementModel
from circuit_atlas.models.architectures import architecture_for
from circuit_atlas.toyworld.corpus import generate_corpus
from circuit_atlas.toyworld.evaluate import evaluate_dir
from circuit_atlas.training.data import tokenize
from circuit_atlas.training.metrics import evaluate
from circuit_atlas.transcoders.io import load_transcoders
from circuit_atlas.zoo import MODELS, TRANSCODERS, ZOO_DIR

MODEL_DIR = ZOO_DIR / MODELS["toyworld"]


def test_artifacts_are_shipped_and_small():
    for path in [MODEL_DIR, ZOO_DIR / TRANSCODERS["toyworld-plt"], ZOO_DIR / TRANSCODERS["toyworld-clt"]]:
        assert path.is_dir(), f"{path} is missing; run `circuit-atlas zoo rebuild toyworld`"
    size = sum(p.stat().st_size for p in (ZOO_DIR / "toyworld").rglob("*") if p.is_file())
    assert size < 30e6
    manifest = json.loads((ZOO_DIR / "toyworld" / "zoo.json").read_text())
    assert manifest["format"] == "circuit-atlas-zoo" and manifest["version"] == 1


def test_model_quality_floor():
    acc = evaluate_dir(MODEL_DIR)
    assert acc["one_hop_city"] == 1.0 and acc["one_hop_capital"] == 1.0
    assert acc["two_hop_heldout"] >= 0.95
    for lang in ("en", "fr", "zh"):
        assert acc[f"opposites_{lang}"] >= 0.95, lang


@functools.cache
def _heldout():
    hf = AutoModelForCausalLM.from_pretrained(MODEL_DIR, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    docs = generate_corpus(seed=1, n_sentences=600)  # the shipped corpus is seed 0
    return hf, tok, tokenize(docs, tok, seq_len=32, pack=False)


@pytest.mark.parametrize("name", ["toyworld-plt", "toyworld-clt"])
def test_transcoder_quality_floor(name):
    hf, _, (seqs, valid) = _heldout()
    tc = load_transcoders(ZOO_DIR / TRANSCODERS[name])
    with torch.no_grad():
        m = evaluate(hf, architecture_for(hf.config.model_type), tc, seqs, valid)
    assert max(m["fvu"]) <= 0.10, m["fvu"]
    assert max(m["l0"]) <= 32, m["l0"]
    assert m["top1_agreement"] >= 0.90


def test_loadable_by_name_and_traces_dallas():
    model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    probs = torch.softmax(model.logits("The capital of the state containing Dallas is")[-1], -1)
    austin = model.tokenizer(" Austin", add_special_tokens=False)["input_ids"]
    assert len(austin) == 1 and int(probs.argmax()) == austin[0]
