"""The one layer loop (models/layers.py) under its options, against the HF model and itself.

- generation's form (a key/value cache, positions fed in chunks) equals one pass over all of them;
- the MLP written from its weights equals the HF module, per family (gated, GPT-2's Conv1D);
- the frozen model's loop (patterns, scales frozen; MLPs replaced) at zero delta is the clean run.
"""

from __future__ import annotations

import pytest
import torch
from tiny import ARCHS, PROMPT, prompt_ids, tiny_model, tiny_tokenizer

from circuit_atlas import ReplacementModel
from circuit_atlas.models.cache import LayerCache
from circuit_atlas.models.layers import Options, embed, run_layers
from circuit_atlas.transcoders.random import random_transcoders


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _model(arch, tok, dtype=torch.float64):
    hf = tiny_model(arch, tokenizer=tok)
    cfg = hf.config
    L = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    d = getattr(cfg, "hidden_size", None) or cfg.n_embd
    return hf, ReplacementModel(hf, tok, random_transcoders("plt", L, d, 16, skip=True), dtype=dtype)


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_chunks_equal_one_pass(arch, tok):
    _, model = _model(arch, tok)
    w, ids = model.weights, prompt_ids(tok)
    site = ("mlp.hook_in", "hook_mlp_out")
    whole = run_layers(w, embed(w, ids), Options(*site))
    caches = [LayerCache() for _ in range(w.n_layers)]
    parts = []
    for chunk in (ids[:3], ids[3:4], ids[4:]):
        parts.append(run_layers(w, embed(w, chunk), Options(*site, caches=caches)))
    torch.testing.assert_close(torch.cat([p.logits for p in parts]), whole.logits, rtol=1e-10, atol=1e-10)
    for l in range(w.n_layers):
        got = torch.cat([p.feature_inputs[l] for p in parts])
        torch.testing.assert_close(got, whole.feature_inputs[l], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_mlp_from_weights_equals_hf_module(arch, tok):
    hf, model = _model(arch, tok, dtype=torch.float32)
    x = torch.randn(5, model.d_model, generator=torch.Generator().manual_seed(0))
    layers = hf.transformer.h if arch == "gpt2" else hf.model.layers
    for block, hf_block in zip(model.weights.blocks, layers):
        with torch.no_grad():
            torch.testing.assert_close(block.mlp(x), hf_block.mlp(x[None])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["gemma2", "gpt2"])
def test_frozen_loop_at_zero_delta_is_the_clean_run(arch, tok):
    _, model = _model(arch, tok)
    frozen = model.freeze(PROMPT)
    c = frozen.clean
    x, z, logits_pre = frozen.run(c.embeddings, torch.zeros_like(c.mlp_outputs))
    torch.testing.assert_close(x, c.feature_inputs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits_pre, c.logits_pre_softcap, rtol=1e-12, atol=1e-12)
