"""Attention of one layer over a whole prompt, and the rotary tables it uses.

Patterns are what attribution freezes, so they are computed apart from the value/output path:
`attention_pattern` gives the post-softmax pattern, `attention_ov` applies a (live or frozen) one.
models/cache.py has the incremental form over a key/value cache (generation).
"""

from __future__ import annotations

import torch

from .linear import linear
from .norms import apply_norm, norm_scale
from .weights import Attention, ModelWeights


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def queries_keys(attn: Attention, x: torch.Tensor, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotated queries (H, n, dh) and keys (Hkv, n, dh) of normed inputs x (n, d); cos/sin (n, dh) or None."""
    n = x.shape[0]
    q = linear(x, attn.W_Q, attn.b_Q).view(n, attn.n_heads, attn.head_dim)
    k = linear(x, attn.W_K, attn.b_K).view(n, attn.n_kv_heads, attn.head_dim)
    if attn.q_norm is not None:
        q = apply_norm(attn.q_norm, q, norm_scale(attn.q_norm, q))
        k = apply_norm(attn.k_norm, k, norm_scale(attn.k_norm, k))
    q, k = q.transpose(0, 1), k.transpose(0, 1)
    if cos is not None:
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
    return q, k


def attention_pattern(attn: Attention, x: torch.Tensor, cos, sin) -> torch.Tensor:
    """Post-softmax pattern (H, T, T) of one layer for its normed input x (T, d)."""
    q, k = queries_keys(attn, x, cos, sin)
    k = k.repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=0)  # grouped-query attention shares kv heads
    return softmax_pattern(attn, q, k, start=0)


def softmax_pattern(attn: Attention, q: torch.Tensor, k: torch.Tensor, start: int) -> torch.Tensor:
    """Pattern (H, n, t) of rotated queries (H, n, dh) at positions start + [0, n) over keys (H, t, dh)."""
    scores = (q @ k.transpose(1, 2)) * attn.scale
    if attn.softcap is not None:
        scores = torch.tanh(scores / attn.softcap) * attn.softcap
    qi = torch.arange(start, start + q.shape[1], device=q.device)[:, None]
    ki = torch.arange(k.shape[1], device=q.device)[None, :]
    allowed = ki <= qi
    if attn.sliding_window is not None:
        allowed = allowed & (qi - ki < attn.sliding_window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    # Half-precision patterns are computed in float32 (as HF does); float32/float64 in their own dtype.
    softmax_dtype = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else scores.dtype
    return torch.softmax(scores, dim=-1, dtype=softmax_dtype).to(q.dtype)


def attention_ov(attn: Attention, x: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Attention output (T, d) given the normed input x (T, d) and a pattern (H, T, T)."""
    T = x.shape[0]
    H, Hkv, dh = attn.n_heads, attn.n_kv_heads, attn.head_dim
    v = linear(x, attn.W_V, attn.b_V)
    v = v.view(T, Hkv, dh).repeat_interleave(H // Hkv, dim=1)  # (T, H, dh)
    z = torch.einsum("hqk,khd->qhd", pattern.to(x.dtype), v).reshape(T, H * dh)
    return linear(z, attn.W_O, attn.b_O)


def rotary_tables(w: ModelWeights, T: int, like: torch.Tensor, layer_type: str | None = None):
    """(cos, sin), each (T, dh) in like's dtype and device, of positions [0, T); `layer_type`: Gemma-3's table."""
    if w.rotary is None:
        return None, None
    rotary = w.rotary
    rope_type = getattr(rotary, "rope_type", "default")
    if isinstance(rope_type, dict):  # one table per layer type (Gemma-3)
        rope_type = rope_type[layer_type]
    if like.dtype == torch.float64 and rope_type == "default":
        # HF builds its tables in float32; a float64 engine rebuilds the default table exactly.
        config = rotary.config
        params = getattr(config, "rope_parameters", None) or {}
        if layer_type is not None:
            params = params[layer_type]
        theta = params.get("rope_theta") or config.rope_theta
        prefix = "" if layer_type is None else f"{layer_type}_"
        half = getattr(rotary, f"{prefix}inv_freq").shape[0]
        inv_freq = 1.0 / theta ** (torch.arange(half, dtype=torch.float64, device=like.device) * 2 / (2 * half))
        angles = torch.arange(T, dtype=torch.float64, device=like.device)[:, None] * inv_freq
        emb = torch.cat((angles, angles), dim=-1)
        scaling = getattr(rotary, f"{prefix}attention_scaling", 1.0)
        return emb.cos() * scaling, emb.sin() * scaling
    # The HF module moves its inv_freq to x's device and returns tables in x's dtype: it reads our
    # tensors and writes none of its own (its model may live on another device or dtype).
    pos = torch.arange(T, device=like.device)[None]
    args = () if layer_type is None else (layer_type,)
    cos, sin = rotary(like[None], pos, *args)
    return cos[0].to(like.dtype), sin[0].to(like.dtype)  # (T, dh)


def layer_rotary_tables(w: ModelWeights, T: int, like: torch.Tensor) -> list[tuple]:
    """Per layer, the (cos, sin) its attention uses (shared unless the layer types differ)."""
    tables: dict[str | None, tuple] = {}
    for b in w.blocks:
        key = b.attn.rope_layer_type
        if key not in tables:
            tables[key] = rotary_tables(w, T, like, key)
    return [tables[b.attn.rope_layer_type] for b in w.blocks]
