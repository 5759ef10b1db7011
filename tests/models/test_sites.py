"""The site rules (models/sites.py): each transpose is the exact adjoint of its forward map.

The frozen model's transposes (attribution) and the forward (clean run, interventions) read the
same functions; here the transpose is checked against autograd's VJP of the forward, per site and
norm kind, so the two directions cannot drift apart.
"""

from __future__ import annotations

import pytest
import torch

from circuit_atlas.models.norms import norm_scale
from circuit_atlas.models.sites import (
    INPUT_SITES,
    OUTPUT_SITES,
    norm_after_output,
    norm_before_output,
    site_input,
    site_input_T,
)
from circuit_atlas.models.weights import Block, Norm

F64 = torch.float64


def _norm(kind: str, d: int, g: torch.Generator) -> Norm:
    return Norm(kind, torch.rand(d, generator=g, dtype=F64) + 0.5, torch.randn(d, generator=g, dtype=F64), 1e-5)


@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("site", INPUT_SITES)
def test_site_input_T_is_the_adjoint(site, kind):
    g = torch.Generator().manual_seed(0)
    P, d, B = 5, 8, 3
    ln2 = _norm(kind, d, g)
    r_mid = torch.randn(P, d, generator=g, dtype=F64, requires_grad=True)
    scale = norm_scale(ln2, r_mid.detach())  # frozen, as in the linear model
    out = site_input(site, ln2, r_mid, scale)
    cot = torch.randn(B, P, d, generator=g, dtype=F64)
    expected = torch.stack([torch.autograd.grad(out, r_mid, c, retain_graph=True)[0] for c in cot])
    torch.testing.assert_close(site_input_T(site, ln2, cot, scale), expected, rtol=1e-12, atol=1e-12)


def test_site_values():
    g = torch.Generator().manual_seed(1)
    d = 6
    ln2 = _norm("rms", d, g)
    r = torch.randn(4, d, generator=g, dtype=F64)
    s = norm_scale(ln2, r)
    assert torch.equal(site_input("hook_resid_mid", ln2, r, s), r)
    torch.testing.assert_close(site_input("ln2.hook_normalized", ln2, r, s), r * s)
    torch.testing.assert_close(site_input("mlp.hook_in", ln2, r, s), r * s * ln2.gain + ln2.bias)
    post = _norm("rms", d, g)
    block = Block(ln1=ln2, attn=None, post_attn_norm=None, ln2=ln2, mlp=None, post_mlp_norm=post)
    assert norm_after_output("mlp.hook_out", block) is post  # written before the post-MLP norm
    assert norm_after_output("hook_mlp_out", block) is None  # written after it
    assert norm_before_output("hook_mlp_out", block) is post and norm_before_output("mlp.hook_out", block) is None
    assert set(OUTPUT_SITES) == {"mlp.hook_out", "hook_mlp_out"}
