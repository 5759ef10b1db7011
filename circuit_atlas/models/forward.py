"""The clean forward pass, written out per sub-layer so the values attribution freezes
(attention patterns, norm scales) and the transcoder sites can be recorded.

Checked against the Hugging Face logits in tests/models/test_forward.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .weights import Attention, ModelWeights, Norm

INPUT_SITES = ("hook_resid_mid", "ln2.hook_normalized", "mlp.hook_in")
OUTPUT_SITES = ("hook_mlp_out", "mlp.hook_out")


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
    out = normalize(norm, x, scale) * norm.gain
    return out if norm.bias is None else out + norm.bias


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def attention_pattern(attn: Attention, x: torch.Tensor, cos, sin) -> torch.Tensor:
    """Post-softmax pattern (H, T, T) of one layer for its normed input x (T, d)."""
    T = x.shape[0]
    H, Hkv, dh = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = x @ attn.W_Q.T + (0 if attn.b_Q is None else attn.b_Q)
    k = x @ attn.W_K.T + (0 if attn.b_K is None else attn.b_K)
    q, k = q.view(T, H, dh), k.view(T, Hkv, dh)
    if attn.q_norm is not None:
        q = apply_norm(attn.q_norm, q, norm_scale(attn.q_norm, q))
        k = apply_norm(attn.k_norm, k, norm_scale(attn.k_norm, k))
    q, k = q.transpose(0, 1), k.transpose(0, 1)  # (H, T, dh), (Hkv, T, dh)
    if cos is not None:
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
    k = k.repeat_interleave(H // Hkv, dim=0)  # grouped-query attention shares kv heads
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
    v = x @ attn.W_V.T + (0 if attn.b_V is None else attn.b_V)
    v = v.view(T, Hkv, dh).repeat_interleave(H // Hkv, dim=1)  # (T, H, dh)
    z = torch.einsum("hqk,khd->qhd", pattern, v).reshape(T, H * dh)
    out = z @ attn.W_O.T
    return out if attn.b_O is None else out + attn.b_O


@dataclass
class CleanRun:
    """Everything attribution needs from one clean forward over a prompt of T tokens."""

    input_ids: torch.Tensor  # (T,)
    embeddings: torch.Tensor  # (T, d) token-embedding contributions (sources)
    constant_embed: torch.Tensor | None  # (T, d) learned positions (a constant)
    patterns: list[torch.Tensor]  # L x (H, T, T)
    scales: dict[str, list[torch.Tensor]]  # "ln1", "post_attn", "ln2", "post_mlp": L x (T, 1)
    final_scale: torch.Tensor  # (T, 1)
    feature_inputs: torch.Tensor  # (L, T, d) values at the transcoder input site
    mlp_outputs: torch.Tensor  # (L, T, d) values at the transcoder output site
    final_resid: torch.Tensor  # (T, d) final-norm output
    logits_pre_softcap: torch.Tensor  # (T, V)
    logits: torch.Tensor  # (T, V)


def rotary_tables(w: ModelWeights, T: int, like: torch.Tensor, layer_type: str | None = None):
    """(cos, sin), each (T, dh), of positions [0, T); `layer_type` picks Gemma-3's per-type table."""
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
    pos = torch.arange(T, device=like.device)[None]
    args = () if layer_type is None else (layer_type,)
    cos, sin = rotary(like[None].to(w.embed.dtype), pos, *args)
    return cos[0].to(like.dtype), sin[0].to(like.dtype)  # (T, dh)


def layer_rotary_tables(w: ModelWeights, T: int, like: torch.Tensor) -> list[tuple]:
    """Per layer, the (cos, sin) its attention uses (shared unless the layer types differ)."""
    tables: dict[str | None, tuple] = {}
    for b in w.blocks:
        key = b.attn.rope_layer_type
        if key not in tables:
            tables[key] = rotary_tables(w, T, like, key)
    return [tables[b.attn.rope_layer_type] for b in w.blocks]


def unembed(w: ModelWeights, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre-softcap logits, logits as the model outputs them) of final-norm outputs z (..., d)."""
    logits_pre = z @ w.W_U.T
    if w.b_U is not None:
        logits_pre = logits_pre + w.b_U
    logits = logits_pre
    if w.final_softcap is not None:
        logits = torch.tanh(logits / w.final_softcap) * w.final_softcap
    return logits_pre, logits


@torch.no_grad()
def clean_forward(w: ModelWeights, input_ids: torch.Tensor, input_site: str, output_site: str) -> CleanRun:
    T = input_ids.shape[0]
    embeddings = w.embed[input_ids] * w.embed_scale
    constant_embed = None if w.position_embed is None else w.position_embed[:T]
    r = embeddings if constant_embed is None else embeddings + constant_embed
    rotary = layer_rotary_tables(w, T, r)
    scales: dict[str, list[torch.Tensor]] = {"ln1": [], "post_attn": [], "ln2": [], "post_mlp": []}
    patterns, inputs, outputs = [], [], []
    for b, (cos, sin) in zip(w.blocks, rotary):
        s1 = norm_scale(b.ln1, r)
        x1 = apply_norm(b.ln1, r, s1)
        pattern = attention_pattern(b.attn, x1, cos, sin)
        a = attention_ov(b.attn, x1, pattern)
        if b.post_attn_norm is not None:
            s_pa = norm_scale(b.post_attn_norm, a)
            a = apply_norm(b.post_attn_norm, a, s_pa)
            scales["post_attn"].append(s_pa)
        r_mid = r + a
        s2 = norm_scale(b.ln2, r_mid)
        mlp_in = apply_norm(b.ln2, r_mid, s2)
        mlp_raw = b.mlp(mlp_in[None])[0]
        added = mlp_raw
        if b.post_mlp_norm is not None:
            s_pm = norm_scale(b.post_mlp_norm, mlp_raw)
            added = apply_norm(b.post_mlp_norm, mlp_raw, s_pm)
            scales["post_mlp"].append(s_pm)
        site_in = {"hook_resid_mid": r_mid, "ln2.hook_normalized": normalize(b.ln2, r_mid, s2), "mlp.hook_in": mlp_in}
        inputs.append(site_in[input_site])
        outputs.append(added if output_site == "hook_mlp_out" else mlp_raw)
        scales["ln1"].append(s1)
        scales["ln2"].append(s2)
        patterns.append(pattern)
        r = r_mid + added
    s_f = norm_scale(w.final_norm, r)
    z = apply_norm(w.final_norm, r, s_f)
    logits_pre, logits = unembed(w, z)
    return CleanRun(
        input_ids=input_ids,
        embeddings=embeddings,
        constant_embed=constant_embed,
        patterns=patterns,
        scales=scales,
        final_scale=s_f,
        feature_inputs=torch.stack(inputs),
        mlp_outputs=torch.stack(outputs),
        final_resid=z,
        logits_pre_softcap=logits_pre,
        logits=logits,
    )
