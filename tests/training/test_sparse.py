"""The training-time sparsity functions and the export of normalised parameters."""

import pytest
import torch

from circuit_atlas.training import TrainConfig
from circuit_atlas.training.coder import TrainableTranscoders
from circuit_atlas.training.sparse import (
    batchtopk,
    batchtopk_threshold,
    jumprelu,
    penalized_jumprelu,
    penalties_reference,
)


def test_jumprelu_straight_through_gradients():
    h = torch.tensor([[0.2, 0.95, 1.04, 2.0]], requires_grad=True)
    theta = torch.tensor([1.0, 1.0, 1.0, 1.0], requires_grad=True)
    a = jumprelu(h, theta, 0.2)
    assert a.tolist() == [[0.0, 0.0, pytest.approx(1.04), 2.0]]
    a.sum().backward()
    assert h.grad.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    # d a / d theta = -(theta / eps) * 1[|h - theta| < eps / 2]: only the two near the threshold move it
    assert theta.grad.tolist() == pytest.approx([0.0, -5.0, -5.0, 0.0])
    x = torch.randn(2, 50, 10)
    kept = batchtopk(x, 3)
    assert ((kept > 0).sum((1, 2)) <= 150).all()
    cut = batchtopk_threshold(x, 3)
    assert torch.equal(x > cut[:, None, None], kept > 0)  # the JumpReLU cut keeps what BatchTopK keeps


@pytest.mark.parametrize("kind", ["plt", "clt"])
@pytest.mark.parametrize("activation", ["jumprelu", "relu", "topk"])
def test_export_folds_the_normalisation(kind, activation):
    """The exported set reconstructs raw activations exactly as the trainable one does."""
    torch.manual_seed(0)
    L, N, d = 3, 40, 8
    x = torch.randn(L, N, d) * torch.tensor([3.0, 0.5, 10.0])[:, None, None] + 1
    y = torch.randn(L, N, d) * torch.tensor([0.2, 4.0, 1.0])[:, None, None] - 2
    k = 4 if activation in ("topk", "batchtopk") else None  # the others refuse a k they would ignore
    cfg = TrainConfig(kind=kind, activation=activation, width=16, skip=True, k=k)
    coder = TrainableTranscoders(cfg, L, d)
    coder.initialize(x, y, seed=0)
    with torch.no_grad():
        for p in coder.parameters():
            p.add_(0.1 * torch.randn_like(p))
        x_n = x * coder.in_scale[:, None, None]
        expected = coder.decode(coder.activate(coder.encode(x_n)), x_n) / coder.out_scale[:, None, None]
    tc = coder.export()
    acts = [tc.activate(l, tc.encode(l, x[l])) for l in range(L)]
    torch.testing.assert_close(tc.reconstruct(acts, x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("learn_theta", [True, False], ids=["jumprelu", "relu"])
def test_fused_penalties_equal_their_autograd_twin(learn_theta):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 200, 16, generator=g, dtype=torch.float64)
    theta = (
        (torch.rand(3, 1, 16, generator=g, dtype=torch.float64) + 0.2)
        if learn_theta
        else torch.zeros(3, 1, 16, dtype=torch.float64)
    )
    norms = torch.rand(3, 1, 16, generator=g, dtype=torch.float64) + 0.1
    W = torch.randn(16, 5, generator=g, dtype=torch.float64)
    results = []
    for fn in (penalized_jumprelu, penalties_reference):
        leaves = [t.clone().requires_grad_(True) for t in (h, theta, norms)]
        a, tanh_sum, gap_sum, active = fn(*leaves, 4.0, 0.5, learn_theta)
        loss = (
            (a @ W).sin().sum() + (torch.tensor([0.3, 0.1, 2.0], dtype=torch.float64) * tanh_sum).sum() + 0.7 * gap_sum
        )  # a downstream use of a, and both penalties
        loss.backward()
        results.append((a.detach(), tanh_sum.detach(), gap_sum.detach(), active, *[t.grad for t in leaves]))
    names = ["a", "tanh_sum", "gap_sum", "active", "grad h", "grad theta", "grad norms"]
    for name, got, want in zip(names, *results):
        if name == "grad theta" and not learn_theta:  # ReLU: theta is the constant 0
            assert got is None
            continue
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_sparse_decode_equals_the_dense_matmul(kind, monkeypatch):
    """The embedding-bag decode of sparse activations gives a @ W_dec's values and gradients (float64),
    including tokens with no active feature (an empty bag)."""
    from circuit_atlas.training import coder as coder_module

    torch.manual_seed(0)
    L, N, d, F = 3, 50, 6, 40
    cfg = TrainConfig(kind=kind, activation="batchtopk", width=F, skip=True, k=3)
    coder = TrainableTranscoders(cfg, L, d).double()
    x = torch.randn(L, N, d, dtype=torch.float64)
    coder.initialize(x, torch.randn(L, N, d, dtype=torch.float64), seed=0)
    pre = coder.encode(x)
    pre[:, :5] = -1.0  # five tokens with nothing active
    results = []
    for density in (1.0, 0.0):  # 1.0: every decode sparse; 0.0: never
        monkeypatch.setattr(coder_module, "SPARSE_DENSITY", density)
        coder.zero_grad()
        p = pre.detach().clone().requires_grad_(True)
        a = coder.activate(p)
        assert 0 < a.count_nonzero() < 0.2 * a.numel()
        y = coder.decode(a, x)
        (y * torch.linspace(-1, 1, d, dtype=torch.float64)).sin().sum().backward()
        grads = [p.grad] + [q.grad.clone() for q in coder.parameters() if q.grad is not None]
        results.append((y.detach(), grads))
    (y_sparse, g_sparse), (y_dense, g_dense) = results
    torch.testing.assert_close(y_sparse, y_dense, rtol=1e-12, atol=1e-12)
    assert len(g_sparse) == len(g_dense) > 2
    for got, want in zip(g_sparse, g_dense):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
