"""The elementary maths every pass shares: linear maps and norms, forward and transposed.

Weights may be stored in a narrower dtype than the computation runs in (bf16 weights, float32
activations: ModelWeights.dtype is the compute dtype). Matrix products do not promote dtypes in
torch, so `linear` casts the weight to the input's dtype at use: one matrix at a time, nothing
kept. Elementwise ops (norm gains, biases) promote on their own and need no cast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # weights.py imports this module (the MLP); the type is only a hint here
    from .weights import Norm


def linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., in) @ W.T (W stored (out, in)) + b, computed in x's dtype."""
    y = x @ W.to(x.dtype).T
    return y if b is None else y + b.to(x.dtype)


def linear_T(g: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Transpose of x -> x @ W.T: cotangents g (..., out) -> (..., in), in g's dtype."""
    return g @ W.to(g.dtype)


def norm_scale(norm: Norm, x: torch.Tensor) -> torch.Tensor:
    """The data-dependent factor of a norm, (..., 1): what attribution freezes."""
    if norm.kind == "layer":
        x = x - x.mean(-1, keepdim=True)
    return torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)


def normalize(norm: Norm, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Norm output before the gain, with a given scale (linear in x once scale is fixed)."""
    if norm.kind == "layer":
        x = x - x.mean(-1, keepdim=True)
    return x * scale


def apply_norm(norm: Norm, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    out = (normalize(norm, x, scale) * norm.gain).to(x.dtype)  # a bf16 gain must not widen bf16 x
    return out if norm.bias is None else out + norm.bias.to(x.dtype)


def _center(g: torch.Tensor) -> torch.Tensor:
    return g - g.mean(-1, keepdim=True)


def norm_T(norm: Norm, g: torch.Tensor, scale: torch.Tensor, with_gain: bool = True) -> torch.Tensor:
    """Transpose of x -> [center](x) * scale (* gain), the frozen norm; g (B, P, d), scale (P, 1)."""
    g = g * scale
    if with_gain:
        g = (g * norm.gain).to(g.dtype)
    return _center(g) if norm.kind == "layer" else g
