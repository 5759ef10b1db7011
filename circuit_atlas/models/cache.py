"""Attention over a key/value cache: the incremental form of attention.attention_pattern/_ov.

Generation feeds a few new positions at a time; their keys and values are appended to the
layer's cache and their queries attend over everything cached so far. With an empty cache
and all positions at once this is exactly the clean forward's attention (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .attention import queries_keys, softmax_pattern
from .linear import linear
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
    q, k = queries_keys(attn, x, cos, sin)  # (H, n, dh), (Hkv, n, dh)
    v = linear(x, attn.W_V, attn.b_V).view(n, Hkv, dh).transpose(0, 1)
    cache.keys.append(k)
    cache.values.append(v)
    K = torch.cat(cache.keys, dim=1).repeat_interleave(H // Hkv, dim=0)  # (H, t, dh)
    V = torch.cat(cache.values, dim=1).repeat_interleave(H // Hkv, dim=0)
    if pattern is None:
        pattern = softmax_pattern(attn, q, K, start)
    z = (pattern @ V).transpose(0, 1).reshape(n, H * dh)  # (n, H*dh)
    return linear(z, attn.W_O, attn.b_O), pattern
