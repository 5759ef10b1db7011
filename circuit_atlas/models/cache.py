"""Attention over a key/value cache: the incremental form of forward.attention_pattern/_ov.

Generation feeds a few new positions at a time; their keys and values are appended to the
layer's cache and their queries attend over everything cached so far. With an empty cache
and all positions at once this is exactly the clean forward's attention (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .forward import apply_norm, norm_scale, rotate_half, softmax_pattern
from .weights import Attention


@dataclass
class LayerCache:
    keys: list[torch.Tensor] = field(default_factory=list)  # chunks of (Hkv, n, dh), rotated
    values: list[torch.Tensor] = field(default_factory=list)  # chunks of (Hkv, n, dh)

    @property
    def length(self) -> int:
        return sum(k.shape[1] for k in self.keys)


def cached_attention(
    attn: Attention,
    x: torch.Tensor,
    cache: LayerCache,
    cos: torch.Tensor | None,
    sin: torch.Tensor | None,
    pattern: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output (n, d) for new normed inputs x (n, d) at positions cache.length + [0, n).

    `cos`/`sin` are the rotary tables of the new positions only, (n, dh). A given `pattern`
    (H, n, cache.length + n) replaces the softmax (frozen attention). Returns (output, pattern).
    """
    n = x.shape[0]
    start = cache.length
    H, Hkv, dh = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = (x @ attn.W_Q.T + (0 if attn.b_Q is None else attn.b_Q)).view(n, H, dh)
    k = (x @ attn.W_K.T + (0 if attn.b_K is None else attn.b_K)).view(n, Hkv, dh)
    v = (x @ attn.W_V.T + (0 if attn.b_V is None else attn.b_V)).view(n, Hkv, dh)
    if attn.q_norm is not None:
        q = apply_norm(attn.q_norm, q, norm_scale(attn.q_norm, q))
        k = apply_norm(attn.k_norm, k, norm_scale(attn.k_norm, k))
    q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # (heads, n, dh)
    if cos is not None:
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
    cache.keys.append(k)
    cache.values.append(v)
    K = torch.cat(cache.keys, dim=1).repeat_interleave(H // Hkv, dim=0)  # (H, t, dh)
    V = torch.cat(cache.values, dim=1).repeat_interleave(H // Hkv, dim=0)
    if pattern is None:
        pattern = softmax_pattern(attn, q, K, start)
    z = (pattern @ V).transpose(0, 1).reshape(n, H * dh)  # (n, H*dh)
    out = z @ attn.W_O.T
    return (out if attn.b_O is None else out + attn.b_O), pattern
