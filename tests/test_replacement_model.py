"""Bad input to ReplacementModel: each mistake gets one clear error naming the fix."""

import pytest
import torch
from tiny import save_tiny, tiny_model, tiny_tokenizer

from circuit_atlas import ReplacementModel
from circuit_atlas.transcoders.io import save_transcoders
from circuit_atlas.transcoders.random import random_transcoders


@pytest.fixture(scope="module")
def llama():
    tok = tiny_tokenizer()
    return tiny_model("llama", tokenizer=tok), tok


def _tc(model, **kw):
    cfg = model.config
    return random_transcoders("plt", kw.pop("n_layers", cfg.num_hidden_layers), kw.pop("d", cfg.hidden_size), 16, **kw)


def test_layer_count_mismatch(llama):
    hf, tok = llama
    with pytest.raises(ValueError, match=r"transcoders have 1 layers but the model has \d+"):
        ReplacementModel(hf, tok, _tc(hf, n_layers=1))


def test_d_model_mismatch(llama):
    hf, tok = llama
    with pytest.raises(ValueError, match="read vectors of size 7 but the model's d_model is"):
        ReplacementModel(hf, tok, _tc(hf, d=7))


def test_unsupported_architecture():
    from transformers import AutoModelForCausalLM, OPTConfig

    hf = AutoModelForCausalLM.from_config(
        OPTConfig(
            vocab_size=32,
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            word_embed_proj_dim=16,
        )
    )
    with pytest.raises(ValueError, match="unsupported architecture 'opt'.*supports model types"):
        ReplacementModel(hf, tiny_tokenizer(), random_transcoders("plt", 1, 16, 8))


def test_not_a_hf_model():
    with pytest.raises(ValueError, match="has no Hugging Face config"):
        ReplacementModel(torch.nn.Linear(2, 2), tiny_tokenizer(), random_transcoders("plt", 1, 2, 4))


def test_empty_prompt(llama):
    hf, tok = llama
    model = ReplacementModel(hf, tok, _tc(hf))
    for empty in ("", "   ", []):
        with pytest.raises(ValueError, match="prompt is empty"):
            model.tokenize(empty)


def test_prompt_longer_than_context(llama):
    hf, tok = llama
    model = ReplacementModel(hf, tok, _tc(hf))
    n_ctx = hf.config.max_position_embeddings
    with pytest.raises(ValueError, match=rf"has {n_ctx + 1} tokens .* context is {n_ctx}; shorten the prompt"):
        model.tokenize(" ".join(["the"] * n_ctx))


def test_token_ids_outside_vocabulary(llama):
    hf, tok = llama
    model = ReplacementModel(hf, tok, _tc(hf))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.tokenize([1, 10**6])


def test_bos_is_prepended_once(llama):
    hf, tok = llama
    model = ReplacementModel(hf, tok, _tc(hf))
    ids = model.tokenize("the capital")
    assert ids[0] == tok.bos_token_id and len(ids) == 3
    assert model.tokenize(ids).tolist() == ids.tolist()


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ReplacementModel.from_pretrained(tmp_path / "nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        ReplacementModel.from_pretrained(tmp_path / "empty", tmp_path)


def test_from_pretrained_round_trip(tmp_path):
    model_dir = save_tiny(tmp_path / "model", "llama")
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    tc = random_transcoders("clt", cfg.num_hidden_layers, cfg.hidden_size, 16)
    save_transcoders(tc, tmp_path / "tc")
    model = ReplacementModel.from_pretrained(model_dir, tmp_path / "tc")
    assert model.architecture.name == "llama" and model.transcoders.kind == "clt"
    assert model.logits("the capital of").shape[0] == 4
