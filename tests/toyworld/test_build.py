"""Smoke test: the whole toy-world build (corpus -> tokenizer -> model -> eval) on a tiny budget."""

import json
from pathlib import Path

import pytest

from circuit_atlas.toyworld import corpus as C
from circuit_atlas.toyworld import model as M
from circuit_atlas.toyworld.build import build_toyworld_model


def test_build_smoke(tmp_path):
    out = tmp_path / "tw"
    ccfg = C.CorpusConfig(n_sentences=2000)
    mcfg = M.ModelConfig(
        n_layers=2, d_model=32, n_heads=2, d_mlp=64, steps=6, batch_size=8, warmup=2, curriculum_steps=3, length_group=2
    )
    m = build_toyworld_model(out, seed=0, progress=False, corpus_config=ccfg, model_config=mcfg)
    sets = C.eval_sets(0)
    assert set(m["accuracy"]) == set(sets)
    assert all(0.0 <= v <= 1.0 for v in m["accuracy"].values())
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == m["accuracy"]
    cc = json.loads((out / "corpus_config.json").read_text())
    assert "Dallas" in cc["heldout_cities"] and cc["n_sentences"] == 2000
    assert cc["city_scheme"] == "real"  # which world (CIRCUIT_ATLAS_TOYWORLD_CITIES) the model was trained on
    assert (out / "model.safetensors").exists()

    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(out)
    model = LlamaForCausalLM.from_pretrained(out)
    assert not model.config.tie_word_embeddings
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tok)
    ids = tok("The capital of the state containing Dallas is", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tok.bos_token_id
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tok))


def test_training_is_deterministic():
    docs = C.generate_corpus(0, 500)
    from circuit_atlas.toyworld import tokenizer as T

    tok = T.train_tokenizer(C.tokenizer_text(docs))
    cfg = M.ModelConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=32, steps=3, batch_size=4, warmup=1)
    a, _ = M.train_model(docs, tok, cfg, progress=False)
    b, _ = M.train_model(docs, tok, cfg, progress=False)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert (p == q).all(), n


SHIPPED = Path(C.__file__).parent.parent / "zoo" / "toyworld" / "model"


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="shipped toy-world model not built")
def test_shipped_artifact_matches_generator():
    """The shipped model's records agree with the code (the quality floors are tested elsewhere)."""
    from transformers import AutoConfig

    cc = json.loads((SHIPPED / "corpus_config.json").read_text(encoding="utf-8"))
    assert cc["heldout_cities"] == C.heldout_cities(cc["seed"])
    metrics = json.loads((SHIPPED / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["accuracy"]) == set(C.eval_sets(cc["seed"]))
    conf = AutoConfig.from_pretrained(SHIPPED)
    assert conf.model_type == "llama" and not conf.tie_word_embeddings
    assert metrics["train"]["n_params"] <= 2_000_000
