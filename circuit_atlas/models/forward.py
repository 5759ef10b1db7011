"""The clean forward pass: the layer loop (layers.py) with everything live, recording the values
attribution freezes (attention patterns, norm scales) and the transcoder sites.

Checked against the Hugging Face logits in tests/models/test_forward.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Re-exported: the maths used to live here, and other modules import it by these names.
from .attention import attention_ov, attention_pattern, layer_rotary_tables, rotary_tables, rotate_half, softmax_pattern
from .layers import Options, embed, run_layers, unembed
from .norms import apply_norm, norm_scale, normalize
from .sites import INPUT_SITES, OUTPUT_SITES
from .weights import ModelWeights

__all__ = [
    "INPUT_SITES", "OUTPUT_SITES", "CleanRun", "apply_norm", "attention_ov", "attention_pattern", "clean_forward",
    "layer_rotary_tables", "norm_scale", "normalize", "rotary_tables", "rotate_half", "softmax_pattern", "unembed",
]  # fmt: skip


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


@torch.no_grad()
def clean_forward(w: ModelWeights, input_ids: torch.Tensor, input_site: str, output_site: str) -> CleanRun:
    """The model's own forward over input_ids (T,), in the compute dtype w.dtype."""
    T = input_ids.shape[0]
    embeddings = embed(w, input_ids)
    t = run_layers(w, embeddings, Options(input_site, output_site, record=True))
    return CleanRun(
        input_ids=input_ids,
        embeddings=embeddings,
        constant_embed=None if w.position_embed is None else w.position_embed[:T].to(w.dtype),
        patterns=t.patterns,
        scales=t.scales,
        final_scale=t.final_scale,
        feature_inputs=torch.stack(t.feature_inputs),
        mlp_outputs=torch.stack(t.mlp_outputs),
        final_resid=t.final_resid,
        logits_pre_softcap=t.logits_pre_softcap,
        logits=t.logits,
    )
