"""The local replacement model: the real model at one prompt, made linear.

Attention patterns and norm scales are held at the prompt's clean values and each MLP
is replaced by a constant (its clean output) plus the transcoder's linear skip path. What
remains - residual stream, the OV path through frozen patterns, frozen norms, skips - is an
affine map from (token embeddings, MLP-output injections) to every downstream quantity.

`run` evaluates that map (differentiable; used by interventions and tests). The `*_T`
methods are its transpose, applied to a batch of cotangents at once: attribution pushes
one cotangent per target row through them instead of calling autograd. All transposed ops
take cotangents (B, P, d) over the first P positions only: causality means a target at
position p never depends on positions after p.
"""

from __future__ import annotations

import torch

from ..transcoders import Transcoders
from .forward import CleanRun, apply_norm, attention_ov, normalize
from .weights import ModelWeights, Norm


def _center(g: torch.Tensor) -> torch.Tensor:
    return g - g.mean(-1, keepdim=True)


def norm_T(norm: Norm, g: torch.Tensor, scale: torch.Tensor, with_gain: bool = True) -> torch.Tensor:
    """Transpose of x -> [center](x) * scale (* gain), the frozen norm; g (B, P, d), scale (P, 1)."""
    g = g * scale
    if with_gain:
        g = g * norm.gain
    return _center(g) if norm.kind == "layer" else g


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
    def _site_input(self, l: int, r_mid: torch.Tensor) -> torch.Tensor:
        b = self.w.blocks[l]
        s2 = self.clean.scales["ln2"][l]
        if self.input_site == "hook_resid_mid":
            return r_mid
        if self.input_site == "ln2.hook_normalized":
            return normalize(b.ln2, r_mid, s2)
        return apply_norm(b.ln2, r_mid, s2)

    def run(self, embeddings: torch.Tensor, mlp_delta: torch.Tensor):
        """Frozen forward. embeddings (T, d), mlp_delta (L, T, d) added at the output site.

        Returns (feature_inputs (L, T, d), final_resid (T, d), logits_pre_softcap (T, V)).
        """
        c, w = self.clean, self.w
        r = embeddings if c.constant_embed is None else embeddings + c.constant_embed
        inputs = []
        for l, b in enumerate(w.blocks):
            x1 = apply_norm(b.ln1, r, c.scales["ln1"][l])
            a = attention_ov(b.attn, x1, c.patterns[l])
            if b.post_attn_norm is not None:
                a = apply_norm(b.post_attn_norm, a, c.scales["post_attn"][l])
            r_mid = r + a
            x_in = self._site_input(l, r_mid)
            inputs.append(x_in)
            out = c.mlp_outputs[l] + mlp_delta[l]
            skip = self.tc.skip(l, x_in)
            if skip is not None:  # the skip path stays live; its clean value is inside mlp_outputs
                out = out + skip - self.tc.skip(l, c.feature_inputs[l])
            if self.output_site == "mlp.hook_out" and b.post_mlp_norm is not None:
                out = apply_norm(b.post_mlp_norm, out, c.scales["post_mlp"][l])
            r = r_mid + out
        z = apply_norm(w.final_norm, r, c.final_scale)
        logits = z @ w.W_U.T
        if w.b_U is not None:
            logits = logits + w.b_U
        return torch.stack(inputs), z, logits

    # --- transposed (VJP) ops, batched over target rows -----------------------------------
    def final_T(self, g_z: torch.Tensor) -> torch.Tensor:
        """Cotangent at the final-norm output -> cotangent at the last residual."""
        P = g_z.shape[1]
        return norm_T(self.w.final_norm, g_z, self.clean.final_scale[:P])

    def output_site_T(self, l: int, g_resid: torch.Tensor) -> torch.Tensor:
        """Cotangent at r_{l+1} -> cotangent at layer l's transcoder output site."""
        b = self.w.blocks[l]
        if self.output_site == "mlp.hook_out" and b.post_mlp_norm is not None:
            P = g_resid.shape[1]
            return norm_T(b.post_mlp_norm, g_resid, self.clean.scales["post_mlp"][l][:P])
        return g_resid

    def skip_T(self, l: int, g_out: torch.Tensor) -> torch.Tensor | None:
        """Cotangent at the output site -> cotangent at the input site, through W_skip."""
        if not self.tc.has_skip:
            return None
        return g_out @ self.tc.W_skip[l]

    def input_site_T(self, l: int, g_in: torch.Tensor) -> torch.Tensor:
        """Cotangent at layer l's transcoder input site -> cotangent at r_mid."""
        if self.input_site == "hook_resid_mid":
            return g_in
        b = self.w.blocks[l]
        P = g_in.shape[1]
        with_gain = self.input_site == "mlp.hook_in"
        return norm_T(b.ln2, g_in, self.clean.scales["ln2"][l][:P], with_gain=with_gain)

    def attention_T(self, l: int, g_mid: torch.Tensor) -> torch.Tensor:
        """Cotangent at r_mid of layer l -> cotangent at r_l (residual plus the OV path)."""
        b, c = self.w.blocks[l], self.clean
        attn = b.attn
        B, P, _ = g_mid.shape
        g = g_mid
        if b.post_attn_norm is not None:
            g = norm_T(b.post_attn_norm, g, c.scales["post_attn"][l][:P])
        H, Hkv, dh = attn.n_heads, attn.n_kv_heads, attn.head_dim
        g_z = (g @ attn.W_O).view(B, P, H, dh)
        pattern = c.patterns[l][:, :P, :P]
        g_v = torch.einsum("hqk,bqhd->bkhd", pattern, g_z)  # (B, P, H, dh)
        if Hkv != H:  # heads sharing a kv head add their cotangents
            g_v = g_v.view(B, P, Hkv, H // Hkv, dh).sum(3)
        g_x = g_v.reshape(B, P, Hkv * dh) @ attn.W_V
        return g_mid + norm_T(b.ln1, g_x, c.scales["ln1"][l][:P])
