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
from .workspace import Workspace

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

    def input_site_T_at(self, l: int, g_in: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """input_site_T for single vectors: g_in (n, d) at `positions` (n,) -> (n, d) at r_mid."""
        scale = self.clean.scales["ln2"][l][positions]  # (n, 1)
        return site_input_T(self.input_site, self.w.blocks[l].ln2, g_in, scale)

    def attention_T(self, l: int, g_mid: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """Cotangent at r_mid of layer l -> cotangent at r_l (residual plus the OV path); see attention_T_."""
        return self.attention_T_(l, g_mid.clone(), at)

    def attention_T_(
        self, l: int, g: torch.Tensor, at: torch.Tensor | None = None, work: Workspace | None = None
    ) -> torch.Tensor:
        """In place: g (B, P, d), the cotangent at r_mid of layer l, becomes the cotangent at r_l.

        This is most of attribution's time, so it makes as few passes over (B, P, d) as it can, with
        its temporaries in `work` (models/workspace.py). The frozen ln1 scale of key k multiplies the
        pattern's column k and the ln1 gain (and LayerNorm's centring) is folded into W_V, both of
        which commute with the products. So the OV path is W_O^T, one pattern product per kv head
        (the GQA group sum inside it, as a sum over (g, q)) and W_V^T added onto g by the same
        product (addmm_).

        at: (B,) positions, when row i of g is zero except at position at[i] (a batch's first
        layer: each target injects at its own position). W_O^T and the pattern then run on one
        position per row instead of P.
        """
        work = Workspace() if work is None else work
        b, c = self.w.blocks[l], self.clean
        attn, post = b.attn, b.post_attn_norm
        B, P, d = g.shape
        dt, dev = g.dtype, g.device
        H, Hkv, dh = attn.n_heads, attn.n_kv_heads, attn.head_dim
        G = H // Hkv  # query heads h = j * G + g share kv head j
        ln1_scale = c.scales["ln1"][l][:P].reshape(1, 1, P).to(dt)
        pattern = (c.patterns[l][:, :P, :P] * ln1_scale).view(Hkv, G, P, P)  # (j, g, q, k)
        W_O = attn.W_O.to(dt)  # (d, H*dh)
        if at is None:
            src = g if post is None else norm_T(post, g, c.scales["post_attn"][l][:P])
            # two buffers take turns: g_z, then the pattern's output; the per-head copy, then g_v
            g_z = torch.matmul(src, W_O, out=work.get("a", (B, P, H * dh), dt, dev))
            z = work.get("b", (Hkv, G, P, B, dh), dt, dev)  # rows (g, q) of each kv head j
            z.copy_(g_z.view(B, P, Hkv, G, dh).permute(2, 3, 1, 0, 4))
            mixed = work.get("a", (Hkv, P, B, dh), dt, dev)  # g_z is spent
            left = pattern.permute(0, 3, 1, 2).reshape(Hkv, P, G * P)  # (j, k, (g, q))
            torch.bmm(left, z.view(Hkv, G * P, B * dh), out=mixed.view(Hkv, P, B * dh))
            g_v = work.get("b", (B, P, Hkv, dh), dt, dev)  # z is spent
            g_v.copy_(mixed.permute(2, 1, 0, 3))
        else:
            src = g[torch.arange(B, device=dev), at]  # (B, d): the only non-zero position of each row
            if post is not None:
                src = norm_T(post, src, c.scales["post_attn"][l][at])
            g_z = (src @ W_O).view(B, Hkv, G, dh)
            left = pattern[:, :, at].permute(2, 0, 3, 1)  # (b, j, k, g): row b's query is at[b]
            mixed = work.get("a", (B, Hkv, P, dh), dt, dev)
            torch.matmul(left, g_z, out=mixed)
            g_v = work.get("b", (B, P, Hkv, dh), dt, dev)  # cotangent at the values
            g_v.copy_(mixed.permute(0, 2, 1, 3))
        W_V = _fold_norm(b.ln1, attn.W_V, dt)  # (Hkv*dh, d)
        g.view(B * P, d).addmm_(g_v.view(B * P, Hkv * dh), W_V)
        return g


def _fold_norm(norm, W: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """W (out, d) @ diag(gain) [@ C]: a frozen norm's gain (and LayerNorm's centring C = I - 11^T/d,
    symmetric) folded into the weight that reads the norm's output, in the compute dtype."""
    wide = torch.promote_types(dtype, torch.float32)  # float64 stays float64 (the oracle tests)
    W = W.to(wide) * norm.gain.to(wide)
    if norm.kind == "layer":
        W = W - W.mean(dim=1, keepdim=True)
    return W.to(dtype)
