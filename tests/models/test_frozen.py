"""The frozen model's attention transpose (models/frozen.py), the inner loop of attribution.

attention_T folds the frozen ln1 scale into the pattern and the ln1 gain (and LayerNorm's centring)
into W_V, contracts the GQA group inside the pattern product, and has a one-position path for a
batch's first layer. Each of those is checked here against autograd's VJP of the frozen forward
(the one layer loop, models/layers.py) for every architecture, in float64.
"""

from __future__ import annotations

import pytest
import torch
from tiny import ARCHS, PROMPT, tiny_model, tiny_tokenizer

from circuit_atlas import ReplacementModel
from circuit_atlas.models.attention import attention_ov
from circuit_atlas.models.norms import apply_norm
from circuit_atlas.models.workspace import Workspace
from circuit_atlas.transcoders.random import random_transcoders


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _frozen(arch, tok):
    hf = tiny_model(arch, tokenizer=tok)
    cfg = hf.config
    L = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    d = getattr(cfg, "hidden_size", None) or cfg.n_embd
    model = ReplacementModel(hf, tok, random_transcoders("plt", L, d, 16, skip=True), dtype=torch.float64)
    return model.freeze(PROMPT)


def _attention_block_vjp(frozen, l, g_mid):
    """Autograd: r_l -> r_mid = r_l + [post](attention_ov(ln1(r_l))), patterns and scales frozen (so the
    map is affine and its VJP does not depend on r_l); one VJP per row of g_mid (B, P, d)."""
    b, c = frozen.w.blocks[l], frozen.clean
    B, P, d = g_mid.shape
    r = torch.zeros(P, d, dtype=g_mid.dtype, requires_grad=True)
    a = attention_ov(b.attn, apply_norm(b.ln1, r, c.scales["ln1"][l][:P]), c.patterns[l][:, :P, :P])
    if b.post_attn_norm is not None:
        a = apply_norm(b.post_attn_norm, a, c.scales["post_attn"][l][:P])
    mid = r + a
    return torch.stack([torch.autograd.grad(mid, r, g_mid[i], retain_graph=True)[0] for i in range(B)])


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_T_is_the_vjp_of_the_frozen_attention_block(arch, tok):
    frozen = _frozen(arch, tok)
    gen = torch.Generator().manual_seed(0)
    T, d = frozen.T, frozen.w.d_model
    for l in range(frozen.n_layers):
        for P in (T, T - 2):  # the whole prompt, and a batch whose cone stops early
            g_mid = torch.randn(3, P, d, generator=gen, dtype=torch.float64)
            expected = _attention_block_vjp(frozen, l, g_mid)
            before = g_mid.clone()
            torch.testing.assert_close(frozen.attention_T(l, g_mid), expected, rtol=1e-10, atol=1e-10)
            assert torch.equal(g_mid, before)  # the out-of-place form leaves its input alone


@pytest.mark.parametrize("arch", ARCHS)
def test_the_one_position_path_equals_the_dense_transpose(arch, tok):
    """A batch's first layer: row i non-zero only at at[i]; attention_T_ in place, in a shared workspace."""
    frozen = _frozen(arch, tok)
    gen = torch.Generator().manual_seed(1)
    T, d = frozen.T, frozen.w.d_model
    work = Workspace()
    at = torch.tensor([T - 1, 2, T - 3, 1])
    for l in range(frozen.n_layers):
        g = torch.zeros(len(at), T, d, dtype=torch.float64)
        g[torch.arange(len(at)), at] = torch.randn(len(at), d, generator=gen, dtype=torch.float64)
        expected = _attention_block_vjp(frozen, l, g)
        dense = frozen.attention_T_(l, g.clone(), work=work)
        sparse = g.clone()
        assert frozen.attention_T_(l, sparse, at=at, work=work) is sparse  # in place
        torch.testing.assert_close(dense, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(sparse, expected, rtol=1e-10, atol=1e-10)


def test_workspace_reuses_and_grows_its_buffers():
    work = Workspace()
    a = work.get("x", (4, 5), torch.float32, "cpu")
    b = work.get("x", (2, 3), torch.float32, "cpu")
    assert b.data_ptr() == a.data_ptr() and b.shape == (2, 3)  # a smaller request is a view of the same memory
    c = work.get("x", (10, 10), torch.float32, "cpu")
    assert c.shape == (10, 10) and c.numel() == 100  # a bigger one gets a new buffer
    assert work.get("x", (3,), torch.float64, "cpu").dtype == torch.float64
