"""Declarative mappings from Hugging Face model families onto one transformer shape.

Every supported family is a pre-norm decoder: embeddings -> [norm -> attention -> (post
norm) -> residual; norm -> MLP -> (post norm) -> residual] x L -> final norm -> unembedding.
A mapping names the modules that play each role and the few switches that differ
(norm kind, gain offset, embedding scale, positional scheme, fused QKV, q/k norms). Adding a family
means adding one `Architecture(...)` here and running tests/models/test_forward.py on a
tiny random instance of it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    name: str
    model_types: tuple[str, ...]  # HF config.model_type values served by this mapping
    layers: str  # dotted path of the ModuleList of blocks
    embed: str
    final_norm: str
    unembed: str
    ln1: str  # pre-attention norm, inside a block
    ln2: str  # pre-MLP norm
    attention: str
    mlp: str
    mlp_up: str = "up_proj"  # inside the MLP module (models/mlp.py writes the MLP from these weights)
    mlp_down: str = "down_proj"
    mlp_gate: str | None = "gate_proj"  # None: an ungated MLP, down(act(up(x)))
    mlp_act: str = "act_fn"  # the (stateless) activation module the MLP calls
    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"
    fused_qkv: str | None = None  # GPT-2's c_attn (Conv1D, weight (d, 3d))
    conv1d: bool = False  # weights stored (in, out) as in GPT-2's Conv1D
    q_norm: str | None = None  # per-head RMSNorm on queries/keys (Qwen3)
    k_norm: str | None = None
    post_attn_norm: str | None = None  # Gemma-2 normalises each sub-block's output
    post_mlp_norm: str | None = None
    position_embed: str | None = None  # learned absolute positions (GPT-2)
    rotary: bool = True
    norm_kind: str = "rms"  # "rms" or "layer"
    norm_gain_offset: float = 0.0  # Gemma multiplies by (1 + weight)
    embed_scale_sqrt_d: bool = False  # Gemma scales embeddings by sqrt(d_model)
    query_pre_attn_scalar: bool = False  # Gemma: scores scaled by config.query_pre_attn_scalar**-0.5


LLAMA = Architecture(
    name="llama",
    model_types=("llama", "mistral"),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    ln1="input_layernorm",
    ln2="post_attention_layernorm",
    attention="self_attn",
    mlp="mlp",
)

QWEN2 = Architecture(**{**LLAMA.__dict__, "name": "qwen2", "model_types": ("qwen2",)})

QWEN3 = Architecture(
    **{**LLAMA.__dict__, "name": "qwen3", "model_types": ("qwen3",), "q_norm": "q_norm", "k_norm": "k_norm"}
)

GEMMA2 = Architecture(
    **{
        **LLAMA.__dict__,
        "name": "gemma2",
        "model_types": ("gemma2",),
        "ln2": "pre_feedforward_layernorm",
        "post_attn_norm": "post_attention_layernorm",
        "post_mlp_norm": "post_feedforward_layernorm",
        "norm_gain_offset": 1.0,
        "embed_scale_sqrt_d": True,
        "query_pre_attn_scalar": True,
    }
)

# Gemma-3: Gemma-2's sandwich norms plus per-head q/k RMSNorms (also 1 + weight), no soft caps,
# and sliding-window layers with their own RoPE base (config.rope_parameters per layer type).
GEMMA3 = Architecture(
    **{**GEMMA2.__dict__, "name": "gemma3", "model_types": ("gemma3_text",), "q_norm": "q_norm", "k_norm": "k_norm"}
)

GPT2 = Architecture(
    name="gpt2",
    model_types=("gpt2",),
    layers="transformer.h",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    ln1="ln_1",
    ln2="ln_2",
    attention="attn",
    mlp="mlp",
    mlp_up="c_fc",
    mlp_down="c_proj",
    mlp_gate=None,
    mlp_act="act",
    fused_qkv="c_attn",
    o="c_proj",
    conv1d=True,
    position_embed="transformer.wpe",
    rotary=False,
    norm_kind="layer",
)

ARCHITECTURES = (LLAMA, QWEN2, QWEN3, GEMMA2, GEMMA3, GPT2)


def architecture_for(model_type: str) -> Architecture:
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            return arch
    supported = sorted(t for a in ARCHITECTURES for t in a.model_types)
    raise ValueError(
        f"unsupported architecture {model_type!r}; circuit-atlas supports model types {supported}. "
        "To add one, write an Architecture mapping in circuit_atlas/models/architectures.py."
    )
