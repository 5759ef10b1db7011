"""random_transcoders and calibrate_thresholds."""

from __future__ import annotations

import pytest
import torch

from circuit_atlas.transcoders import calibrate_thresholds, random_transcoders


def inputs(L: int, n: int, d: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(L, n, d, generator=torch.Generator().manual_seed(seed))  # (L, T, d)


@pytest.mark.parametrize("kind", ["plt", "clt"])
@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
def test_random_transcoders_shapes_and_scales(kind, activation):
    L, d, F = 3, 32, 128
    tc = random_transcoders(kind, L, d, F, activation=activation, k=8 if activation == "topk" else None, skip=True)
    assert (tc.kind, tc.activation, tc.n_layers, tc.d_model) == (kind, activation, L, d)
    for l in range(L):
        assert tc.W_dec[l].shape == (F, 1 if kind == "plt" else L - l, d)
    if activation == "jumprelu":
        assert all((t > 0).all() for t in tc.threshold)
    x = inputs(L, 200, d)
    pre = torch.stack([tc.encode(l, x[l]) for l in range(L)])
    assert 0.7 < pre.std() < 1.4
    acts = [tc.activate(l, pre[l]) for l in range(L)]
    y = tc.reconstruct(acts, x) - torch.stack([tc.skip(l, x[l]) for l in range(L)])
    assert 0.6 < y.std() < 1.6  # O(1) reconstructions


def test_random_transcoders_is_seeded_and_dtype_independent():
    a = random_transcoders("clt", 2, 8, 16, seed=3)
    b = random_transcoders("clt", 2, 8, 16, seed=3)
    c = random_transcoders("clt", 2, 8, 16, seed=4)
    d64 = random_transcoders("clt", 2, 8, 16, seed=3, dtype=torch.float64)
    assert all(torch.equal(x, y) for x, y in zip(a.W_dec, b.W_dec))
    assert not torch.equal(a.W_enc[0], c.W_enc[0])
    assert d64.dtype == torch.float64 and torch.equal(d64.W_enc[1].float(), a.W_enc[1])
    assert random_transcoders("plt", 2, 8, 16, input_hook="mlp.hook_in").input_hook == "mlp.hook_in"


@pytest.mark.parametrize("activation", ["jumprelu", "relu"])
def test_calibrate_hits_target_l0_with_margin(activation):
    L, d, F, n = 2, 24, 256, 40
    tc = random_transcoders("plt", L, d, F, activation=activation, seed=5)
    x = inputs(L, n, d, seed=6)
    out = calibrate_thresholds(tc, list(x), target_l0=12.0, margin=0.05)
    assert out is tc
    for l in range(L):
        h = x[l].double() @ tc.W_enc[l].double().T + tc.b_enc[l].double()  # (T, F)
        cut = tc.threshold[l].double() if activation == "jumprelu" else torch.zeros(F, dtype=torch.float64)
        if activation == "jumprelu":
            assert (tc.threshold[l] > 0).all()
        l0 = (h > cut).sum(-1).double().mean()
        assert 9.0 <= l0 <= 15.0, l0
        gap = (h - cut).abs().min(0).values  # (F,) closest pre-activation to each cut
        assert (gap >= 0.05 * h.std(0, unbiased=False) * (1 - 1e-4)).all()
        # float32 and float64 switch on exactly the same features
        assert torch.equal(tc.activate(l, tc.encode(l, x[l])) != 0, h > cut)


def test_calibrate_clt_and_extreme_targets():
    tc = random_transcoders("clt", 2, 16, 64, seed=0)
    x = inputs(2, 10, 16)
    calibrate_thresholds(tc, list(x), target_l0=0.0)
    assert all((tc.activate(l, tc.encode(l, x[l])) == 0).all() for l in range(2))
    calibrate_thresholds(tc, list(x), target_l0=64.0)  # everything on would need theta <= 0: stays positive
    assert all((t > 0).all() for t in tc.threshold)


def test_calibrate_rejects_topk_and_wrong_inputs():
    tc = random_transcoders("plt", 2, 8, 16, activation="topk", k=2)
    with pytest.raises(ValueError, match="TopK transcoders have no thresholds"):
        calibrate_thresholds(tc, [torch.zeros(3, 8)] * 2, 2)
    tc = random_transcoders("plt", 2, 8, 16)
    with pytest.raises(ValueError, match="needs inputs for all 2 layers, got 1"):
        calibrate_thresholds(tc, [torch.zeros(3, 8)], 2)
    with pytest.raises(ValueError, match="non-negative"):
        calibrate_thresholds(tc, [torch.zeros(3, 8)] * 2, -1)


def test_random_transcoders_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind must be 'plt' or 'clt'"):
        random_transcoders("sae", 1, 4, 4)
    with pytest.raises(ValueError, match="needs k"):
        random_transcoders("plt", 1, 4, 4, activation="topk")
    with pytest.raises(ValueError, match="must be positive"):
        random_transcoders("plt", 0, 4, 4)
