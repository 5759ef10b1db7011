"""Dtypes and the caller's model: weights stored in one dtype, computed in another, nothing mutated.

- building a ReplacementModel in any dtype leaves the caller's HF model (dtype, device, values,
  train/eval flag) and Transcoders object exactly as they were;
- weights already in the asked dtype and device are shared with the HF model, not copied;
- bf16/fp16 weights with compute_dtype=float32 compute exactly what float32 does on the same
  (rounded) weights, and results are float32; against the unrounded float32 model, attribution
  differs by the weights' rounding only (stated tolerance below);
- from_pretrained(dtype=torch.bfloat16) loads and computes in bf16.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import PROMPT, prompt_ids, save_tiny, tiny_model, tiny_tokenizer, tiny_transcoders

from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.transcoders.random import random_transcoders

# Relative Frobenius error of a bf16-weight graph (float32 compute) against the float32 model's,
# over the same nodes: bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ~ 2e-3 per weight).
BF16_GRAPH_RTOL = 3e-2


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _random_tc(hf):
    cfg = hf.config
    L = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    d = getattr(cfg, "hidden_size", None) or cfg.n_embd
    return random_transcoders("clt", L, d, 16, skip=True)


def _snapshot(module: torch.nn.Module) -> dict:
    state = {f"param:{n}": p for n, p in module.named_parameters()}
    state.update({f"buffer:{n}": b for n, b in module.named_buffers()})
    return {n: (t.dtype, t.device, t.detach().clone()) for n, t in state.items()}


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
@pytest.mark.parametrize(
    "dtype, compute", [(torch.float64, None), (torch.bfloat16, torch.float32), (torch.float16, torch.float32)]
)
def test_caller_model_and_transcoders_are_never_mutated(arch, dtype, compute, tok):
    hf = tiny_model(arch, tokenizer=tok)
    hf.train()  # the caller's train/eval flag is theirs too (GPT-2's MLP has dropout)
    tc = _random_tc(hf)
    before, tc_before = _snapshot(hf), [t.clone() for t in tc.W_enc + tc.b_dec]
    model = ReplacementModel(hf, tok, tc, dtype=dtype, compute_dtype=compute)
    logits = model.logits(PROMPT)
    model.generate(PROMPT, max_new_tokens=2)
    assert logits.dtype == (compute or dtype)
    assert hf.training, "the caller's model was switched to eval mode"
    after = _snapshot(hf)
    assert after.keys() == before.keys()
    for name, (dt, dev, value) in before.items():
        dt2, dev2, value2 = after[name]
        assert (dt2, dev2) == (dt, dev), f"{name} became {dt2} on {dev2} (was {dt} on {dev})"
        assert torch.equal(value2, value), f"{name} changed value"
    assert tc.dtype == torch.float32, "the caller's Transcoders were cast"
    assert all(torch.equal(a, b) for a, b in zip(tc.W_enc + tc.b_dec, tc_before))
    assert model.transcoders.dtype == (compute or dtype)
    # and the train flag does not reach our forward: no dropout, the same logits as an eval-mode copy
    evaluated = ReplacementModel(copy.deepcopy(hf).eval(), tok, tc, dtype=dtype, compute_dtype=compute)
    assert torch.equal(evaluated.logits(PROMPT), logits)


def test_weights_are_shared_when_dtype_and_device_match(tok):
    hf = tiny_model("llama", tokenizer=tok)
    w = ReplacementModel(hf, tok, _random_tc(hf)).weights
    layer = hf.model.layers[0]
    assert w.embed.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    assert w.blocks[0].mlp.W_up.data_ptr() == layer.mlp.up_proj.weight.data_ptr()
    assert w.blocks[0].attn.W_Q.data_ptr() == layer.self_attn.q_proj.weight.data_ptr()
    # and in another dtype, a copy: the model's own tensors keep theirs
    w64 = ReplacementModel(hf, tok, _random_tc(hf), dtype=torch.float64).weights
    assert w64.blocks[0].mlp.W_up.dtype == torch.float64 and layer.mlp.up_proj.weight.dtype == torch.float32


def test_compute_dtype_must_be_float_and_not_narrower(tok):
    hf = tiny_model("llama", tokenizer=tok)
    with pytest.raises(ValueError, match="compute_dtype torch.bfloat16 is narrower than the weights' dtype"):
        ReplacementModel(hf, tok, _random_tc(hf), dtype=torch.float32, compute_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="compute_dtype must be a floating-point torch.dtype"):
        ReplacementModel(hf, tok, _random_tc(hf), compute_dtype=torch.int32)


def _graph(model):
    return attribute(model, PROMPT, max_n_logits=5, desired_logit_prob=0.99, progress=False)


def _aligned(g, ref):
    """g's dense adjacency re-indexed to ref's nodes (node identity: kind, layer, position, feature)."""
    key = lambda graph: list(  # noqa: E731
        zip(graph.kind.tolist(), graph.layer.tolist(), graph.position.tolist(), graph.feature.tolist())
    )
    where = {k: i for i, k in enumerate(key(g))}
    idx = torch.tensor([where[k] for k in key(ref)])
    return g.adjacency.double()[idx][:, idx]


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_bf16_weights_with_float32_compute(arch, tok):
    hf32 = tiny_model(arch, tokenizer=tok)
    tc = tiny_transcoders(hf32, "clt", True, "jumprelu", prompt_ids=prompt_ids(tok))
    hf_bf16 = copy.deepcopy(hf32).to(torch.bfloat16)
    mixed = ReplacementModel(hf_bf16, tok, copy.deepcopy(tc), compute_dtype=torch.float32)
    assert mixed.weight_dtype == torch.bfloat16 and mixed.dtype == torch.float32
    w = mixed.weights
    assert {w.embed.dtype, w.W_U.dtype, w.blocks[0].attn.W_O.dtype, w.blocks[0].mlp.W_down.dtype} == {torch.bfloat16}
    # Exactly float32 maths on the rounded weights: every product and sum in float32.
    rounded = ReplacementModel(copy.deepcopy(hf_bf16).to(torch.float32), tok, copy.deepcopy(tc))
    ids = prompt_ids(tok)
    logits, ref = mixed.logits(ids), rounded.logits(ids)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    g_mixed, g_rounded = _graph(mixed), _graph(rounded)
    assert g_mixed.adjacency.dtype == torch.float32 and g_mixed.activation.dtype == torch.float32
    A, B = _aligned(g_mixed, g_rounded), g_rounded.adjacency.double()
    rows = g_rounded.kind == 0  # feature rows: every product and sum in float32, as on the rounded weights
    assert float((A[rows] - B[rows]).norm() / B[rows].norm()) < 1e-5
    # Logit rows: attribution/targets.py forms the logit direction W_U[t] - mean(W_U) in W_U's own dtype,
    # so with bf16 weights that vector is bf16-rounded (2^-9 relative) before the float32 pass.
    rows = g_rounded.kind == 3
    assert float((A[rows] - B[rows]).norm() / B[rows].norm()) < 5e-3
    # Against the unrounded float32 model: the same nodes, edges within the weights' rounding.
    g32 = _graph(ReplacementModel(copy.deepcopy(hf32), tok, copy.deepcopy(tc)))
    A = _aligned(g_mixed, g32)
    rel = float((A - g32.adjacency.double()).norm() / g32.adjacency.double().norm())
    assert rel < BF16_GRAPH_RTOL, rel


def test_from_pretrained_honours_dtype(tmp_path, tok):
    path = save_tiny(tmp_path / "m", "llama")
    hf32 = tiny_model("llama", tokenizer=tok)
    ref = ReplacementModel(hf32, tok, _random_tc(hf32)).logits(PROMPT)
    bf16 = ReplacementModel.from_pretrained(path, _random_tc(hf32), dtype=torch.bfloat16)
    assert next(bf16.hf_model.parameters()).dtype == torch.bfloat16
    assert bf16.weights.embed.dtype == torch.bfloat16 and bf16.dtype == torch.bfloat16
    # loaded straight in bf16 and shared: no second copy of the weights
    assert bf16.weights.embed.data_ptr() == bf16.hf_model.model.embed_tokens.weight.data_ptr()
    logits = bf16.logits(PROMPT)
    assert logits.dtype == torch.bfloat16
    assert float((logits.float() - ref).norm() / ref.norm()) < 5e-2
    mixed = ReplacementModel.from_pretrained(path, _random_tc(hf32), dtype=torch.bfloat16, compute_dtype=torch.float32)
    assert mixed.weights.embed.dtype == torch.bfloat16 and mixed.logits(PROMPT).dtype == torch.float32
