"""Read a Hugging Face model's weights into one uniform layout (see architectures.py).

Linear maps are stored nn.Linear-style, W (out, in), so y = x @ W.T + b, whatever the
family's own storage (GPT-2's Conv1D is transposed here, its fused QKV split).

Two dtypes: weights are stored in `weight_dtype` and every computation runs in `dtype` (the
compute dtype, float32 for bf16 weights "with float32 accumulation"). Reading never writes to the
HF model: a tensor already in the right dtype and device is shared, any other is a copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .architectures import Architecture
from .mlp import MLP


@dataclass
class Norm:
    kind: str  # "rms" or "layer"
    gain: torch.Tensor  # (d,) effective gain (Gemma's 1 + weight already applied)
    bias: torch.Tensor | None  # (d,)
    eps: float


@dataclass
class Attention:
    W_Q: torch.Tensor  # (H*dh, d)
    W_K: torch.Tensor  # (Hkv*dh, d)
    W_V: torch.Tensor  # (Hkv*dh, d)
    W_O: torch.Tensor  # (d, H*dh)
    b_Q: torch.Tensor | None
    b_K: torch.Tensor | None
    b_V: torch.Tensor | None
    b_O: torch.Tensor | None
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scale: float  # multiplies q.k
    softcap: float | None  # Gemma-2 attention-logit soft cap
    sliding_window: int | None  # keys with q - k >= window are masked
    q_norm: Norm | None
    k_norm: Norm | None
    rope_layer_type: str | None = None  # Gemma-3: this layer's rotary table is keyed by its layer type


@dataclass
class Block:
    ln1: Norm
    attn: Attention
    post_attn_norm: Norm | None
    ln2: Norm
    mlp: MLP  # written from the HF MLP's weights (models/mlp.py)
    post_mlp_norm: Norm | None


@dataclass
class ModelWeights:
    arch: Architecture
    embed: torch.Tensor  # (V, d)
    embed_scale: float
    position_embed: torch.Tensor | None  # (n_ctx, d)
    blocks: list[Block]
    final_norm: Norm
    W_U: torch.Tensor  # (V, d)
    b_U: torch.Tensor | None
    final_softcap: float | None
    rotary: nn.Module | None  # HF rotary-embedding module: (x, position_ids[, layer_type]) -> (cos, sin)
    max_positions: int | None
    dtype: torch.dtype  # the compute dtype: activations, residual stream, patterns, cotangents

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return self.embed.shape[1]


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _tensor(t: torch.Tensor | None, dtype: torch.dtype, device) -> torch.Tensor | None:
    return None if t is None else t.detach().to(device=device, dtype=dtype)


def _norm(module: nn.Module, arch: Architecture, dtype, device, kind: str | None = None) -> Norm:
    gain = module.weight.detach().to(device=device, dtype=dtype) + arch.norm_gain_offset
    bias = getattr(module, "bias", None)
    eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", None) or 1e-6
    return Norm(kind or arch.norm_kind, gain, _tensor(bias, dtype, device), float(eps))


def _attention(block: nn.Module, arch: Architecture, config, layer: int, dtype, device, norm_dtype) -> Attention:
    attn = _get(block, arch.attention)
    d = config.hidden_size if hasattr(config, "hidden_size") else config.n_embd
    H = config.num_attention_heads if hasattr(config, "num_attention_heads") else config.n_head
    Hkv = getattr(config, "num_key_value_heads", None) or H
    dh = getattr(config, "head_dim", None) or d // H
    if arch.fused_qkv:
        qkv = _get(attn, arch.fused_qkv)
        W = qkv.weight.detach().T  # Conv1D stores (in, out)
        b = qkv.bias.detach()
        W_Q, W_K, W_V = W.split(H * dh, dim=0)
        b_Q, b_K, b_V = b.split(H * dh, dim=0)
        o = _get(attn, arch.o)
        W_O, b_O = (o.weight.detach().T if arch.conv1d else o.weight.detach()), o.bias
    else:
        q, k, v, o = (_get(attn, n) for n in (arch.q, arch.k, arch.v, arch.o))
        W_Q, W_K, W_V, W_O = q.weight, k.weight, v.weight, o.weight
        b_Q, b_K, b_V, b_O = q.bias, k.bias, v.bias, o.bias
    if arch.query_pre_attn_scalar:
        scale = config.query_pre_attn_scalar**-0.5
    else:
        scale = dh**-0.5 if getattr(config, "scale_attn_weights", True) else 1.0
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        scale /= layer + 1
    layer_types = getattr(config, "layer_types", None)
    sliding = None
    if layer_types is not None and layer_types[layer] == "sliding_attention":
        sliding = config.sliding_window
    # Gemma-3 gives sliding and global layers their own RoPE base: rope_parameters keyed by layer type.
    rope_parameters = getattr(config, "rope_parameters", None)
    rope_layer_type = None
    if layer_types is not None and isinstance(rope_parameters, dict) and layer_types[layer] in rope_parameters:
        rope_layer_type = layer_types[layer]
    q_norm = _norm(_get(attn, arch.q_norm), arch, norm_dtype, device, "rms") if arch.q_norm else None
    k_norm = _norm(_get(attn, arch.k_norm), arch, norm_dtype, device, "rms") if arch.k_norm else None
    t = lambda x: _tensor(x, dtype, device)  # noqa: E731
    return Attention(
        t(W_Q), t(W_K), t(W_V), t(W_O), t(b_Q), t(b_K), t(b_V), t(b_O),
        n_heads=H, n_kv_heads=Hkv, head_dim=dh, scale=float(scale),
        softcap=getattr(config, "attn_logit_softcapping", None), sliding_window=sliding,
        q_norm=q_norm, k_norm=k_norm, rope_layer_type=rope_layer_type,
    )  # fmt: skip


def _mlp(block: nn.Module, arch: Architecture, dtype, device) -> MLP:
    mod = _get(block, arch.mlp)

    def weight(name: str | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if name is None:
            return None, None
        lin = _get(mod, name)
        W = lin.weight.detach().T if arch.conv1d else lin.weight.detach()  # Conv1D stores (in, out)
        return _tensor(W, dtype, device), _tensor(getattr(lin, "bias", None), dtype, device)

    (W_up, b_up), (W_down, b_down), (W_gate, b_gate) = weight(arch.mlp_up), weight(arch.mlp_down), weight(arch.mlp_gate)
    return MLP(W_up, b_up, W_down, b_down, getattr(mod, arch.mlp_act), W_gate, b_gate)


def read_weights(
    hf_model: nn.Module, arch: Architecture, dtype: torch.dtype, device, compute_dtype: torch.dtype | None = None
) -> ModelWeights:
    """Uniform view of `hf_model`'s weights stored in `dtype` on `device`, computed in `compute_dtype`."""
    config = hf_model.config
    cdt = compute_dtype or dtype  # norm gains are (d,) vectors: kept in the compute dtype (Gemma's 1 + w unrounded)
    blocks = []
    for l, block in enumerate(_get(hf_model, arch.layers)):
        blocks.append(
            Block(
                ln1=_norm(_get(block, arch.ln1), arch, cdt, device),
                attn=_attention(block, arch, config, l, dtype, device, cdt),
                post_attn_norm=_norm(_get(block, arch.post_attn_norm), arch, cdt, device)
                if arch.post_attn_norm
                else None,
                ln2=_norm(_get(block, arch.ln2), arch, cdt, device),
                mlp=_mlp(block, arch, dtype, device),
                post_mlp_norm=_norm(_get(block, arch.post_mlp_norm), arch, cdt, device) if arch.post_mlp_norm else None,
            )
        )
    d = blocks[0].attn.W_Q.shape[1]
    unembed = _get(hf_model, arch.unembed)
    rotary = None
    if arch.rotary:
        rotary = _get(hf_model, arch.layers.rsplit(".", 1)[0] + ".rotary_emb")
    pos = _get(hf_model, arch.position_embed).weight if arch.position_embed else None
    max_positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    embed = _get(hf_model, arch.embed)
    embed_scale = 1.0
    if arch.embed_scale_sqrt_d:
        # Use the model's own (dtype-rounded) normalizer when it keeps one, so we match it exactly.
        buffer = getattr(embed, "embed_scale", None)
        embed_scale = float(buffer) if buffer is not None else float(d**0.5)
    embed_weight = _tensor(embed.weight, dtype, device)
    return ModelWeights(
        arch=arch,
        embed=embed_weight,
        embed_scale=embed_scale,
        position_embed=_tensor(pos, dtype, device),
        blocks=blocks,
        final_norm=_norm(_get(hf_model, arch.final_norm), arch, cdt, device),
        # A tied unembedding (Gemma) shares the embedding's copy rather than making a second one.
        W_U=embed_weight if unembed.weight is embed.weight else _tensor(unembed.weight, dtype, device),
        b_U=_tensor(getattr(unembed, "bias", None), dtype, device),
        final_softcap=getattr(config, "final_logit_softcapping", None),
        rotary=rotary,
        max_positions=max_positions,
        dtype=cdt,
    )
