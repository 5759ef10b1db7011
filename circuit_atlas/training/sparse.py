"""Training-time activation functions and their gradients.

JumpReLU (Rajamanoharan et al. 2024, "Jumping Ahead"): a = h * H(h - theta). H has no useful
derivative, so the backward pass uses a straight-through estimator with a rectangle kernel
K(u) = 1[|u| < 1/2] of bandwidth eps:

    da/dh     = H(h - theta)                          (the ordinary derivative, Dirac term dropped)
    da/dtheta = -(theta / eps) * K((h - theta) / eps) (the Dirac term, smoothed over a window eps)

Only pre-activations within eps/2 of the threshold move it. The tanh sparsity penalty is a
function of a, so it reaches theta through the same estimator. theta = exp(log_theta) keeps it
positive.

`penalized_jumprelu` is the same activation fused with the two JumpReLU losses (their sums over
all tokens and features, see coder.py) and a hand-written backward: the (L, N, F) tensors are the
bulk of a training step on CPU, and the fused form reads them about half as often as autograd
does. `penalties_reference` is its plain-autograd twin, which the tests compare it with.

TopK keeps the k largest pre-activations of each token; BatchTopK keeps the k * N largest of a
layer over the whole batch of N tokens (so L0 is k on average but varies per token). Gradients
flow to the kept pre-activations only.
"""

from __future__ import annotations

import torch


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(h, theta)
        ctx.eps = eps
        return h * (h > theta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, theta = ctx.saved_tensors
        eps = ctx.eps
        grad_h = grad * (h > theta)
        grad_theta = -(theta / eps) * _rectangle((h - theta) / eps) * grad
        return grad_h, grad_theta.sum_to_size(theta.shape), None


def jumprelu(h: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    """h (..., F), theta broadcastable to h -> a (..., F) with the straight-through threshold gradient."""
    return JumpReLU.apply(h, theta, eps)


class PenalizedJumpReLU(torch.autograd.Function):
    """(a, per-layer sums (L,) of tanh(c * n * a), sum of relu(theta - h) * n, a > 0) for h (L, N, F), theta and n (L, 1, F)."""

    @staticmethod
    def forward(ctx, h, theta, norms, c: float, eps: float, learn_theta: bool):
        # torch.where rather than multiplying by a bool mask: that would first copy the mask to floats
        mask = h > theta
        a = torch.where(mask, h, 0.0)
        t = torch.tanh(a * (c * norms))  # 0 where inactive
        gap_sum = (theta - h).clamp_min_(0).sum(1, keepdim=True)  # (L, 1, F)
        ctx.save_for_backward(h, theta, norms, mask, a, t, gap_sum)
        ctx.c, ctx.eps, ctx.learn_theta = c, eps, learn_theta
        ctx.mark_non_differentiable(mask)
        return a, t.sum((1, 2)), (gap_sum * norms).sum(), mask

    @staticmethod
    def backward(ctx, g_a, g_tanh, g_gap, _):
        h, theta, norms, mask, a, t, gap_sum = ctx.saved_tensors
        c, eps = ctx.c, ctx.eps
        s = t.mul_(t).neg_().add_(1)  # 1 - tanh^2, in place of t
        g_tanh = g_tanh[:, None, None]  # (L, 1, 1)
        grad_norms = g_tanh * c * (a * s).sum(1, keepdim=True) + g_gap * gap_sum
        g = s.mul_(g_tanh * c * norms).add_(g_a)  # total gradient reaching a, in place of s
        grad_h = torch.where(mask, g, -g_gap * norms)
        grad_theta = None
        if ctx.learn_theta:
            window = (h - theta).abs_() < eps / 2
            below = h.shape[1] - mask.count_nonzero(1).unsqueeze(1)
            grad_theta = -(theta / eps) * torch.where(window, g, 0.0).sum(1, keepdim=True) + g_gap * norms * below
        return grad_h, grad_theta, grad_norms, None, None, None


def penalized_jumprelu(h, theta, norms, c: float, eps: float, learn_theta: bool = True):
    """JumpReLU (or ReLU with theta = 0, learn_theta=False) and its penalty sums; see the module docstring."""
    return PenalizedJumpReLU.apply(h, theta, norms, c, eps, learn_theta)


def penalties_reference(h, theta, norms, c: float, eps: float, learn_theta: bool = True):
    """penalized_jumprelu in plain autograd (same values and gradients, more memory traffic)."""
    a = jumprelu(h, theta, eps) if learn_theta else h.clamp_min(0)  # not learn_theta: ReLU, theta = 0
    return a, torch.tanh(c * norms * a).sum((1, 2)), ((theta - h).clamp_min(0) * norms).sum(), a > 0


def topk(h: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest entries of each row of h (..., F), clamped at 0."""
    values, indices = h.topk(k, dim=-1)
    return torch.zeros_like(h).scatter(-1, indices, values.clamp_min(0))


def batchtopk(h: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k * N largest entries of each h[l] (L, N, F) over its batch of N tokens, clamped at 0."""
    flat = h.flatten(-2)  # (L, N*F)
    n = min(flat.shape[-1], k * h.shape[-2])
    values, indices = flat.topk(n, dim=-1)
    return torch.zeros_like(flat).scatter(-1, indices, values.clamp_min(0)).view_as(h)


def batchtopk_threshold(h: torch.Tensor, k: int) -> torch.Tensor:
    """Per layer, the cut (L,) of BatchTopK on a (large) batch h (L, N, F): h > cut keeps the k * N largest.

    It is the (k*N + 1)-th largest entry (clamped at 0), so the JumpReLU rule h > theta keeps the
    same entries BatchTopK keeps on this batch, and about k per token on others.
    """
    flat = h.flatten(-2)
    n = min(flat.shape[-1], k * h.shape[-2] + 1)
    cut = flat.topk(n, dim=-1).values[..., -1]
    if n < k * h.shape[-2] + 1:  # the batch has no more than k*N entries: keep everything positive
        cut = torch.zeros_like(cut)
    return cut.clamp_min(0)
