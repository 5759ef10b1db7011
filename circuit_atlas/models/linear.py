"""Linear maps with weights stored in a narrower dtype than the computation (models/weights.py).

Weights may be bf16 while activations are float32 (ModelWeights.dtype is the compute dtype).
Matrix products do not promote dtypes in torch, so the weight is cast to the input's dtype at
use: one matrix at a time, nothing kept, and a no-op when the dtypes already agree. Elementwise
ops (norm gains, biases) promote on their own and need no cast.
"""

from __future__ import annotations

import torch


def linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., in) @ W.T (W stored (out, in)) + b, computed in x's dtype."""
    y = x @ W.to(x.dtype).T
    return y if b is None else y + b.to(x.dtype)


def linear_T(g: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Transpose of x -> x @ W.T: cotangents g (..., out) -> (..., in), in g's dtype."""
    return g @ W.to(g.dtype)
