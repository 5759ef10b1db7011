"""Transcoder activation functions: ReLU, JumpReLU and TopK.

Attribution never differentiates through these (features are graph nodes, their
nonlinearity is cut), so they are plain functions of the pre-activations.
"""

from __future__ import annotations

import torch

ACTIVATIONS = ("relu", "jumprelu", "topk")


def relu(pre: torch.Tensor) -> torch.Tensor:
    return pre.clamp_min(0)


def jumprelu(pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    # a = h * 1[h > theta]; theta is per feature and broadcasts over leading dims.
    return pre * (pre > threshold)


def topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    # Keep the k largest pre-activations of each position (and only positive ones).
    k = min(k, pre.shape[-1])
    values, indices = pre.topk(k, dim=-1)
    out = torch.zeros_like(pre)
    out.scatter_(-1, indices, values.clamp_min(0))
    return out


def apply_activation(
    name: str, pre: torch.Tensor, threshold: torch.Tensor | None = None, k: int | None = None
) -> torch.Tensor:
    """Activation `name` applied to pre-activations `pre` (..., F)."""
    if name == "relu":
        return relu(pre)
    if name == "jumprelu":
        if threshold is None:
            raise ValueError("a JumpReLU transcoder needs a threshold per feature")
        return jumprelu(pre, threshold)
    if name == "topk":
        if k is None:
            raise ValueError("a TopK transcoder needs k")
        return topk(pre, k)
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")
