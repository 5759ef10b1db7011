"""The local replacement model: the real model at one prompt, made linear.

Attention patterns and norm scales are held at the prompt's clean values and each MLP
is replaced by a constant (its clean output) plus the transcoder's linear skip path. What
remains - residual stream, the OV path through frozen patterns, frozen norms, skips - is an
affine map from (token embeddings, MLP-output injections) to every downstream quantity.

`run` evaluates that map: the one layer loop (layers.py) with every freeze on (differentiable;
used by interventions and tests). The `*_T` methods are its transpose, applied to a batch of
cotangents at once: attribution pushes one cotangent per target row through them instead of
calling autograd. They are explicit linear algebra (they ARE the method) and read the same site
rules (sites.py) as the forward. All transposed ops take cotangents (B, P, d) over the first P
positions only: causality means a target at position p never depends on positions after p.
"""

from __future__ import annotations

import torch

from ..transcoders import Transcoders
from .forward import CleanRun
from .layers import Options, Replacement, run_layers
from .linear import linear_T
from .norms import norm_T
from .sites import norm_after_output, site_input_T
from .weights import ModelWeights

__all__ = ["FrozenModel", "norm_T"]


class FrozenModel:
    def __init__(self, weights: ModelWeights, transcoders: Transcoders, run: CleanRun):
        self.w = weights
        self.tc = transcoders
        self.clean = run
        self.input_site = transcoders.input_hook
        self.output_site = transcoders.output_hook
        self.n_layers = weights.n_layers
        self.T = run.input_ids.shape[0]

    @property
    def embeddings(self) -> torch.Tensor:
        return self.clean.embeddings

    @property
    def mlp_outputs(self) -> torch.Tensor:
        return self.clean.mlp_outputs

    @property
    def feature_inputs(self) -> torch.Tensor:
        return self.clean.feature_inputs

    # --- forward -----------------------------------------------------------------------
    def options(self, mlp_delta: torch.Tensor | None = None) -> Options:
        """The loop's options for this frozen model; mlp_delta (L, T, d) is added at the output sites."""
        c = self.clean
        return Options(
            self.input_site,
            self.output_site,
            patterns=c.patterns,
            scales=c.scales,
            final_scale=c.final_scale,
            replace=Replacement(c.mlp_outputs, c.feature_inputs, self.tc),
            edit=None if mlp_delta is None else (lambda l, x_in: mlp_delta[l]),
        )

    def run(self, embeddings: torch.Tensor, mlp_delta: torch.Tensor):
        """Frozen forward. embeddings (T, d), mlp_delta (L, T, d) added at the output site.

        Returns (feature_inputs (L, T, d), final_resid (T, d), logits_pre_softcap (T, V)).
        """
        t = run_layers(self.w, embeddings, self.options(mlp_delta))
        return torch.stack(t.feature_inputs), t.final_resid, t.logits_pre_softcap

    # --- transposed (VJP) ops, batched over target rows -----------------------------------
    def final_T(self, g_z: torch.Tensor) -> torch.Tensor:
        """Cotangent at the final-norm output -> cotangent at the last residual."""
        P = g_z.shape[1]
        return norm_T(self.w.final_norm, g_z, self.clean.final_scale[:P])

    def output_site_T(self, l: int, g_resid: torch.Tensor) -> torch.Tensor:
        """Cotangent at r_{l+1} -> cotangent at layer l's transcoder output site."""
        post = norm_after_output(self.output_site, self.w.blocks[l])
        if post is None:
            return g_resid
        P = g_resid.shape[1]
        return norm_T(post, g_resid, self.clean.scales["post_mlp"][l][:P])

    def skip_T(self, l: int, g_out: torch.Tensor) -> torch.Tensor | None:
        """Cotangent at the output site -> cotangent at the input site, through W_skip."""
        if not self.tc.has_skip:
            return None
        return linear_T(g_out, self.tc.W_skip[l])

    def input_site_T(self, l: int, g_in: torch.Tensor) -> torch.Tensor:
        """Cotangent at layer l's transcoder input site -> cotangent at r_mid."""
        P = g_in.shape[1]
        return site_input_T(self.input_site, self.w.blocks[l].ln2, g_in, self.clean.scales["ln2"][l][:P])

    def attention_T(self, l: int, g_mid: torch.Tensor) -> torch.Tensor:
        """Cotangent at r_mid of layer l -> cotangent at r_l (residual plus the OV path)."""
        b, c = self.w.blocks[l], self.clean
        attn = b.attn
        B, P, _ = g_mid.shape
        g = g_mid
        if b.post_attn_norm is not None:
            g = norm_T(b.post_attn_norm, g, c.scales["post_attn"][l][:P])
        H, Hkv, dh = attn.n_heads, attn.n_kv_heads, attn.head_dim
        g_z = linear_T(g, attn.W_O).view(B, P, H, dh)
        pattern = c.patterns[l][:, :P, :P]
        g_v = torch.einsum("hqk,bqhd->bkhd", pattern, g_z)  # (B, P, H, dh)
        if Hkv != H:  # heads sharing a kv head add their cotangents
            g_v = g_v.view(B, P, Hkv, H // Hkv, dh).sum(3)
        g_x = linear_T(g_v.reshape(B, P, Hkv * dh), attn.W_V)
        return g_mid + norm_T(b.ln1, g_x, c.scales["ln1"][l][:P])
