"""Norms (RMSNorm, LayerNorm) split into their data-dependent scale and the linear rest, and the
transpose of a norm whose scale is frozen (what attribution pushes cotangents through).
"""

from __future__ import annotations

import torch

from .weights import Norm


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
