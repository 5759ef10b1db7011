"""The one layer loop: embeddings -> [attention, MLP] x L -> final norm -> unembedding.

Every forward in circuit-atlas is this loop with different options:

    clean run (forward.clean_forward)       everything live; records patterns, norm scales, sites
    frozen linear model (FrozenModel.run)   patterns and norm scales frozen; every MLP replaced by
                                            its clean output plus the live skip path; a delta added
                                            at each output site (differentiable)
    interventions (InterventionRunner)      patterns and norm scales frozen or live; MLPs real or
                                            replaced at chosen layers; feature edits written through
                                            the decoders (`edit`); a key/value cache
    generation                              the same, a few positions at a time over the cache

Per block:  r_mid = r + [post_attn_norm](attn(ln1(r)));  x_in = input site of r_mid;
            r' = r_mid + [post_mlp_norm](MLP(ln2(r_mid)))   (or the replacement, at the output site).
The site rules are in sites.py; the transposes of the frozen model (frozen.py) mirror this loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .attention import attention_ov, attention_pattern, layer_rotary_tables
from .cache import LayerCache, cached_attention
from .linear import linear
from .norms import apply_norm, norm_scale
from .sites import norm_after_output, norm_before_output, site_input
from .weights import ModelWeights, Norm

SCALE_NAMES = ("ln1", "post_attn", "ln2", "post_mlp")


@dataclass
class Replacement:
    """MLPs held at their clean output-site value, plus the skip path's change: the local replacement model."""

    outputs: torch.Tensor  # (L, T, d) clean values at the output site
    inputs: torch.Tensor  # (L, T, d) clean values at the input site
    transcoders: object  # Transcoders: only its skip path is read
    layers: frozenset[int] | None = None  # the replaced layers; None: all

    def covers(self, layer: int) -> bool:
        return self.layers is None or layer in self.layers


@dataclass
class Options:
    """What one pass holds fixed, replaces, edits and records. Frozen values cover the whole prompt."""

    input_site: str
    output_site: str
    patterns: Sequence[torch.Tensor] | None = None  # L x (H, T, T) frozen attention; None: live softmax
    scales: Mapping[str, Sequence[torch.Tensor]] | None = None  # frozen norm scales (CleanRun.scales); None: live
    final_scale: torch.Tensor | None = None  # (T, 1), with `scales`
    replace: Replacement | None = None  # MLPs replaced by constant + skip; None: the real MLPs everywhere
    edit: Callable[[int, torch.Tensor], torch.Tensor | None] | None = None  # (layer, x_in) -> delta at output site
    caches: list[LayerCache] | None = None  # per-layer key/value caches (positions continue after them)
    record: bool = False  # keep patterns and norm scales (the clean run's)


@dataclass
class Trace:
    """What a pass computed, over its n new positions."""

    feature_inputs: list[torch.Tensor] = field(default_factory=list)  # L x (n, d) at the input site
    mlp_outputs: list[torch.Tensor] = field(default_factory=list)  # L x (n, d) at the output site
    patterns: list[torch.Tensor] = field(default_factory=list)  # L x (H, n, t), when recorded
    scales: dict[str, list[torch.Tensor]] = field(default_factory=lambda: {k: [] for k in SCALE_NAMES})
    final_scale: torch.Tensor | None = None  # (n, 1)
    final_resid: torch.Tensor | None = None  # (n, d) final-norm output
    logits_pre_softcap: torch.Tensor | None = None  # (n, V)
    logits: torch.Tensor | None = None  # (n, V)


def embed(w: ModelWeights, input_ids: torch.Tensor) -> torch.Tensor:
    """Token-embedding contributions (n, d) in the compute dtype (positions are added by the loop)."""
    return w.embed[input_ids].to(w.dtype) * w.embed_scale


def unembed(w: ModelWeights, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre-softcap logits, logits as the model outputs them) of final-norm outputs z (..., d)."""
    logits_pre = linear(z, w.W_U, w.b_U)
    logits = logits_pre
    if w.final_softcap is not None:
        logits = torch.tanh(logits / w.final_softcap) * w.final_softcap
    return logits_pre, logits


def run_layers(w: ModelWeights, embeddings: torch.Tensor, opts: Options) -> Trace:
    """One pass over new positions [lo, lo + n) (lo = cache length) from token embeddings (n, d)."""
    trace = Trace()
    lo = 0 if opts.caches is None else opts.caches[0].length
    hi = lo + embeddings.shape[0]

    def scale(name: str, l: int, norm: Norm, x: torch.Tensor) -> torch.Tensor:
        if opts.scales is None:
            s = norm_scale(norm, x)
        else:
            s = opts.final_scale if name == "final" else opts.scales[name][l]
        if opts.record and name != "final":
            trace.scales[name].append(s)
        return s

    r = embeddings
    if w.position_embed is not None:  # learned positions (GPT-2): a constant of every pass
        r = r + w.position_embed[lo:hi].to(r.dtype)
    rotary = [(None, None) if c is None else (c[lo:hi], s[lo:hi]) for c, s in layer_rotary_tables(w, hi, r)]
    for l, b in enumerate(w.blocks):
        # Attention: the pattern live or frozen, over the cache when there is one.
        x1 = apply_norm(b.ln1, r, scale("ln1", l, b.ln1, r))
        frozen = None if opts.patterns is None else opts.patterns[l]
        if opts.caches is not None:
            a, pattern = cached_attention(b.attn, x1, opts.caches[l], *rotary[l], frozen)
        else:
            pattern = attention_pattern(b.attn, x1, *rotary[l]) if frozen is None else frozen
            a = attention_ov(b.attn, x1, pattern)
        if b.post_attn_norm is not None:
            a = apply_norm(b.post_attn_norm, a, scale("post_attn", l, b.post_attn_norm, a))
        r_mid = r + a
        s2 = scale("ln2", l, b.ln2, r_mid)
        x_in = site_input(opts.input_site, b.ln2, r_mid, s2)
        delta = None if opts.edit is None else opts.edit(l, x_in)

        # MLP: the value at the output site is the replacement (clean value + skip change) or the
        # real MLP's, plus any delta; the post-MLP norm (if any) sits on one side of the site or the other.
        if opts.replace is not None and opts.replace.covers(l):
            rep, tc = opts.replace, opts.replace.transcoders
            site = rep.outputs[l] if delta is None else rep.outputs[l] + delta
            skip = tc.skip(l, x_in)
            if skip is not None:  # the skip path stays live; its clean value is inside the clean output
                site = site + skip - tc.skip(l, rep.inputs[l])
        else:
            mlp_in = x_in if opts.input_site == "mlp.hook_in" else apply_norm(b.ln2, r_mid, s2)
            site = b.mlp(mlp_in)
            pre = norm_before_output(opts.output_site, b)
            if pre is not None:
                site = apply_norm(pre, site, scale("post_mlp", l, pre, site))
            if delta is not None:
                site = site + delta
        post = norm_after_output(opts.output_site, b)
        out = site if post is None else apply_norm(post, site, scale("post_mlp", l, post, site))
        trace.feature_inputs.append(x_in)
        trace.mlp_outputs.append(site)
        if opts.record:
            trace.patterns.append(pattern)
        r = r_mid + out

    s_f = scale("final", -1, w.final_norm, r)
    trace.final_scale = s_f
    trace.final_resid = apply_norm(w.final_norm, r, s_f)
    trace.logits_pre_softcap, trace.logits = unembed(w, trace.final_resid)
    return trace
