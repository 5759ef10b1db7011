"""Independent float64 oracle for attribution graphs.

This module re-implements, from a Hugging Face model's weights alone, the clean forward pass
of six architectures (llama, qwen2, qwen3, gemma2, gemma3, gpt2) and the *frozen replacement model*
used for attribution, then builds the dense attribution adjacency by brute force with
`torch.func.jacrev`. It deliberately shares no code with `circuit_atlas.models` or
`circuit_atlas.attribution`; only `circuit_atlas.transcoders.Transcoders` (for the
transcoder maths) and the node-order convention of `circuit_atlas.graph.Graph` are used.

Conventions (see the tests' brief):
- r_0 = token-embedding contribution (Gemma-2: embed * normalizer) + learned positions (GPT-2,
  a constant). The source "embedding p" is the token part at position p.
- Layer l: r_mid = r + attn(norm1(r)) [Gemma-2: + post_attention_layernorm(attn(...))];
  r_{l+1} = r_mid + (value added to the residual by the MLP block).
- Transcoder input sites: hook_resid_mid = r_mid; ln2.hook_normalized = pre-MLP norm output
  before its gain (and bias); mlp.hook_in = pre-MLP norm output (= MLP input).
- Output sites: hook_mlp_out = what is added to the residual (Gemma-2: after
  post_feedforward_layernorm); mlp.hook_out = the MLP module's output.
- Frozen model: attention probabilities and every norm's rsqrt scale are held at their
  clean values (LayerNorm centering stays live, it is linear); the MLP value at the output
  site is clean + skip(x_in live) - skip(x_in clean) + injection; everything downstream of
  the output site (Gemma-2's post-feedforward norm with mlp.hook_out, the residual, the
  final norm) is live with frozen scales. The frozen model is affine in
  (embeddings (T, d), injections (L, T, d)).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

ARCHS = ("llama", "qwen2", "qwen3", "gemma2", "gemma3_text", "gpt2")
F64 = torch.float64


# ----------------------------------------------------------------------------------------
# Weight extraction
# ----------------------------------------------------------------------------------------
@dataclass
class Norm:
    kind: str  # "rms" or "ln"
    weight: torch.Tensor
    bias: torch.Tensor | None
    eps: float
    one_plus: bool = False  # Gemma-style (1 + g)

    @property
    def gain(self) -> torch.Tensor:
        return 1.0 + self.weight if self.one_plus else self.weight


@dataclass
class Attn:
    Wq: torch.Tensor  # (H*hd, d)
    bq: torch.Tensor | None
    Wk: torch.Tensor  # (Hkv*hd, d)
    bk: torch.Tensor | None
    Wv: torch.Tensor
    bv: torch.Tensor | None
    Wo: torch.Tensor  # (d, H*hd)
    bo: torch.Tensor | None
    n_heads: int
    n_kv: int
    head_dim: int
    scale: float
    softcap: float | None = None
    sliding_window: int | None = None
    q_norm: Norm | None = None
    k_norm: Norm | None = None
    rope_theta: float | None = None


@dataclass
class Layer:
    norm1: Norm
    attn: Attn
    post_attn_norm: Norm | None
    norm2: Norm
    mlp: torch.nn.Module
    post_mlp_norm: Norm | None


@dataclass
class Weights:
    arch: str
    embed: torch.Tensor  # (V, d)
    embed_scale: float | None
    pos_embed: torch.Tensor | None  # (n_pos, d)
    layers: list[Layer]
    final_norm: Norm
    W_U: torch.Tensor  # (V, d)
    b_U: torch.Tensor | None
    final_softcap: float | None


def _t(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.detach().to(F64).clone()


def _rms(mod, one_plus=False) -> Norm:
    eps = getattr(mod, "variance_epsilon", None)
    if eps is None:
        eps = mod.eps
    return Norm("rms", _t(mod.weight), None, float(eps), one_plus)


def _ln(mod) -> Norm:
    return Norm("ln", _t(mod.weight), _t(mod.bias), float(mod.eps))


def _linear(lin) -> tuple[torch.Tensor, torch.Tensor | None]:
    return _t(lin.weight), _t(lin.bias)


def extract_weights(hf_model) -> Weights:
    """Float64 weights of a HF causal LM (the model itself is not modified)."""
    cfg = hf_model.config
    arch = cfg.model_type
    if arch not in ARCHS:
        raise ValueError(f"oracle does not know architecture {arch!r}")
    mlp_model = copy.deepcopy(hf_model).to(F64)  # MLP submodules evaluated in float64
    layers: list[Layer] = []
    if arch == "gpt2":
        tr = mlp_model.transformer
        d = cfg.n_embd
        H = cfg.n_head
        hd = d // H
        scale = hd**-0.5 if cfg.scale_attn_weights else 1.0
        for i, blk in enumerate(tr.h):
            if cfg.scale_attn_by_inverse_layer_idx:
                scale_i = scale / float(i + 1)
            else:
                scale_i = scale
            W = _t(blk.attn.c_attn.weight)  # Conv1D: (in, out)
            b = _t(blk.attn.c_attn.bias)
            attn = Attn(
                Wq=W[:, :d].T.contiguous(),
                bq=b[:d],
                Wk=W[:, d : 2 * d].T.contiguous(),
                bk=b[d : 2 * d],
                Wv=W[:, 2 * d :].T.contiguous(),
                bv=b[2 * d :],
                Wo=_t(blk.attn.c_proj.weight).T.contiguous(),
                bo=_t(blk.attn.c_proj.bias),
                n_heads=H,
                n_kv=H,
                head_dim=hd,
                scale=scale_i,
            )
            layers.append(Layer(_ln(blk.ln_1), attn, None, _ln(blk.ln_2), blk.mlp, None))
        lm_b = getattr(mlp_model.lm_head, "bias", None)
        return Weights(
            arch,
            _t(tr.wte.weight),
            None,
            _t(tr.wpe.weight),
            layers,
            _ln(tr.ln_f),
            _t(mlp_model.lm_head.weight),
            _t(lm_b),
            None,
        )

    m = mlp_model.model
    gemma = arch in ("gemma2", "gemma3_text")
    gemma3 = arch == "gemma3_text"  # Gemma-2's layout + (1 + w) q/k norms, a RoPE base per layer type
    for i, blk in enumerate(m.layers):
        sa = blk.self_attn
        Wq, bq = _linear(sa.q_proj)
        Wk, bk = _linear(sa.k_proj)
        Wv, bv = _linear(sa.v_proj)
        Wo, bo = _linear(sa.o_proj)
        hd = sa.head_dim
        H = cfg.num_attention_heads
        n_kv = cfg.num_key_value_heads
        layer_type = cfg.layer_types[i] if getattr(cfg, "layer_types", None) else "full_attention"
        rp = cfg.rope_parameters[layer_type] if gemma3 else cfg.rope_parameters
        if rp.get("rope_type", "default") != "default":
            raise ValueError("oracle supports only default RoPE")
        if gemma:
            scale = float(cfg.query_pre_attn_scalar) ** -0.5
            softcap = cfg.attn_logit_softcapping
        else:
            scale = hd**-0.5
            softcap = None
        window = cfg.sliding_window if layer_type == "sliding_attention" else None
        attn = Attn(
            Wq,
            bq,
            Wk,
            bk,
            Wv,
            bv,
            Wo,
            bo,
            H,
            n_kv,
            hd,
            scale,
            softcap,
            window,
            _rms(sa.q_norm, gemma3) if arch in ("qwen3", "gemma3_text") else None,
            _rms(sa.k_norm, gemma3) if arch in ("qwen3", "gemma3_text") else None,
            float(rp["rope_theta"]),
        )
        if gemma:
            layers.append(
                Layer(
                    _rms(blk.input_layernorm, True),
                    attn,
                    _rms(blk.post_attention_layernorm, True),
                    _rms(blk.pre_feedforward_layernorm, True),
                    blk.mlp,
                    _rms(blk.post_feedforward_layernorm, True),
                )
            )
        else:
            layers.append(
                Layer(
                    _rms(blk.input_layernorm),
                    attn,
                    None,
                    _rms(blk.post_attention_layernorm),
                    blk.mlp,
                    None,
                )
            )
    embed_scale = None
    if gemma:
        buf = getattr(m.embed_tokens, "embed_scale", None)
        # HF multiplies by the normalizer cast to the *original* model dtype.
        orig_dtype = hf_model.model.embed_tokens.weight.dtype
        if buf is not None:
            embed_scale = float(torch.tensor(float(buf), dtype=torch.float64).to(orig_dtype).to(F64))
        else:
            embed_scale = float(torch.tensor(cfg.hidden_size**0.5, dtype=orig_dtype).to(F64))
    lm_b = getattr(mlp_model.lm_head, "bias", None)
    return Weights(
        arch,
        _t(m.embed_tokens.weight),
        embed_scale,
        None,
        layers,
        _rms(m.norm, gemma),
        _t(mlp_model.lm_head.weight),
        _t(lm_b),
        cfg.final_logit_softcapping if gemma else None,
    )


# ----------------------------------------------------------------------------------------
# Forward (clean records everything; frozen reads the record)
# ----------------------------------------------------------------------------------------
@dataclass
class CleanRun:
    """Everything a clean float64 forward records."""

    input_ids: torch.Tensor
    emb: torch.Tensor  # (T, d) token-embedding contributions (sources)
    pos: torch.Tensor  # (T, d) constant positional part (zeros unless GPT-2)
    patterns: list[torch.Tensor]  # (H, T, T) per layer
    scales: dict[str, torch.Tensor]  # norm name -> (T, 1) rsqrt scale (or (T, H, 1) for q/k norms)
    resid_mid: torch.Tensor  # (L, T, d)
    ln2_normalized: torch.Tensor  # (L, T, d) pre-MLP norm before gain
    mlp_in: torch.Tensor  # (L, T, d)
    mlp_out_module: torch.Tensor  # (L, T, d)  mlp.hook_out
    mlp_out_resid: torch.Tensor  # (L, T, d)  hook_mlp_out
    final_z: torch.Tensor  # (T, d)
    logits_pre: torch.Tensor  # (T, V)
    logits: torch.Tensor  # (T, V) post-softcap

    def input_site(self, hook: str) -> torch.Tensor:
        return {
            "hook_resid_mid": self.resid_mid,
            "ln2.hook_normalized": self.ln2_normalized,
            "mlp.hook_in": self.mlp_in,
        }[hook]

    def output_site(self, hook: str) -> torch.Tensor:
        return {"hook_mlp_out": self.mlp_out_resid, "mlp.hook_out": self.mlp_out_module}[hook]


def _norm_apply(x: torch.Tensor, n: Norm, key: str, scales: dict, frozen: bool):
    """(pre-gain normalized, full output) with the scale recorded or read."""
    if n.kind == "rms":
        xc = x
    else:
        xc = x - x.mean(-1, keepdim=True)
    if frozen:
        s = scales[key]
    else:
        s = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + n.eps)
        scales[key] = s
    pre = xc * s
    out = pre * n.gain
    if n.bias is not None:
        out = out + n.bias
    return pre, out


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x (T, heads, hd): rotate-half RoPE at positions 0..T-1, computed in float64."""
    T, _, hd = x.shape
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=F64) / hd))
    ang = torch.arange(T, dtype=F64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)  # (T, hd)
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    rot = torch.cat([-x2, x1], dim=-1)
    return x * cos + rot * sin


def _lin(x, W, b):
    y = x @ W.T
    return y if b is None else y + b


def _attention(x: torch.Tensor, a: Attn, l: int, patterns: list, scales: dict, frozen: bool) -> torch.Tensor:
    T = x.shape[0]
    H, Hkv, hd = a.n_heads, a.n_kv, a.head_dim
    rep = H // Hkv
    v = _lin(x, a.Wv, a.bv).reshape(T, Hkv, hd).repeat_interleave(rep, dim=1)  # (T, H, hd)
    if frozen:
        pat = patterns[l]
    else:
        q = _lin(x, a.Wq, a.bq).reshape(T, H, hd)
        k = _lin(x, a.Wk, a.bk).reshape(T, Hkv, hd)
        if a.q_norm is not None:
            q = _norm_apply(q, a.q_norm, f"{l}.q_norm", scales, False)[1]
            k = _norm_apply(k, a.k_norm, f"{l}.k_norm", scales, False)[1]
        if a.rope_theta is not None:
            q = _rope(q, a.rope_theta)
            k = _rope(k, a.rope_theta)
        k = k.repeat_interleave(rep, dim=1)
        s = torch.einsum("qhd,khd->hqk", q, k) * a.scale
        if a.softcap is not None:
            s = torch.tanh(s / a.softcap) * a.softcap
        qi = torch.arange(T)[:, None]
        ki = torch.arange(T)[None, :]
        allowed = ki <= qi
        if a.sliding_window is not None:
            allowed = allowed & (ki > qi - a.sliding_window)
        s = s.masked_fill(~allowed, float("-inf"))
        pat = torch.softmax(s, dim=-1)
        patterns.append(pat)
    z = torch.einsum("hqk,khd->qhd", pat, v).reshape(T, H * hd)
    return _lin(z, a.Wo, a.bo)


class OracleModel:
    """Float64 re-implementation of a HF causal LM, with its frozen replacement model."""

    def __init__(self, hf_model):
        self.w = extract_weights(hf_model)
        self.arch = self.w.arch
        self.n_layers = len(self.w.layers)
        self.d_model = self.w.embed.shape[1]

    # --- embeddings ---------------------------------------------------------------------
    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        e = self.w.embed[input_ids]
        if self.w.embed_scale is not None:
            e = e * self.w.embed_scale
        return e

    def positional(self, T: int) -> torch.Tensor:
        if self.w.pos_embed is None:
            return torch.zeros(T, self.d_model, dtype=F64)
        return self.w.pos_embed[:T]

    # --- clean forward --------------------------------------------------------------------
    @torch.no_grad()
    def clean(self, input_ids: torch.Tensor) -> CleanRun:
        ids = torch.as_tensor(input_ids).long().reshape(-1)
        T = ids.shape[0]
        emb = self.token_embeddings(ids)
        pos = self.positional(T)
        scales: dict[str, torch.Tensor] = {}
        patterns: list[torch.Tensor] = []
        r = emb + pos
        rm, ln2n, mi, mo, ma = [], [], [], [], []
        for l, ly in enumerate(self.w.layers):
            _, h = _norm_apply(r, ly.norm1, f"{l}.norm1", scales, False)
            att = _attention(h, ly.attn, l, patterns, scales, False)
            if ly.post_attn_norm is not None:
                att = _norm_apply(att, ly.post_attn_norm, f"{l}.post_attn", scales, False)[1]
            r = r + att
            rm.append(r)
            pre, x = _norm_apply(r, ly.norm2, f"{l}.norm2", scales, False)
            ln2n.append(pre)
            mi.append(x)
            m = ly.mlp(x.unsqueeze(0)).squeeze(0)
            mo.append(m)
            if ly.post_mlp_norm is not None:
                m = _norm_apply(m, ly.post_mlp_norm, f"{l}.post_mlp", scales, False)[1]
            ma.append(m)
            r = r + m
        _, z = _norm_apply(r, self.w.final_norm, "final", scales, False)
        lp = _lin(z, self.w.W_U, self.w.b_U)
        logits = lp
        if self.w.final_softcap is not None:
            logits = torch.tanh(lp / self.w.final_softcap) * self.w.final_softcap
        st = lambda xs: torch.stack(xs)  # noqa: E731
        return CleanRun(ids, emb, pos, patterns, scales, st(rm), st(ln2n), st(mi), st(mo), st(ma), z, lp, logits)

    # --- steered forward (interventions) ---------------------------------------------------
    @torch.no_grad()
    def steered(
        self,
        input_ids: torch.Tensor,
        steer,
        input_hook: str,
        output_hook: str,
        patterns: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Live float64 forward with additions at the transcoder output sites; returns logits (T, V).

        `steer(l, x_in)` sees layer l's transcoder input and returns {layer: (T, d) addition} for the
        output site of that layer (>= l). `patterns` (from a clean run) freezes attention; the norms
        and the real MLPs stay live.
        """
        ids = torch.as_tensor(input_ids).long().reshape(-1)
        T = ids.shape[0]
        r = self.token_embeddings(ids) + self.positional(T)
        scales: dict[str, torch.Tensor] = {}
        live: list[torch.Tensor] = []
        pending = torch.zeros(self.n_layers, T, self.d_model, dtype=F64)
        for l, ly in enumerate(self.w.layers):
            _, h = _norm_apply(r, ly.norm1, f"{l}.norm1", scales, False)
            att = _attention(h, ly.attn, l, patterns if patterns is not None else live, scales, patterns is not None)
            if ly.post_attn_norm is not None:
                att = _norm_apply(att, ly.post_attn_norm, f"{l}.post_attn", scales, False)[1]
            r = r + att
            pre, x = _norm_apply(r, ly.norm2, f"{l}.norm2", scales, False)
            x_in = {"hook_resid_mid": r, "ln2.hook_normalized": pre, "mlp.hook_in": x}[input_hook]
            for target, add in steer(l, x_in).items():
                pending[target] += add
            m = ly.mlp(x.unsqueeze(0)).squeeze(0)
            if output_hook == "mlp.hook_out":
                m = m + pending[l]
            if ly.post_mlp_norm is not None:
                m = _norm_apply(m, ly.post_mlp_norm, f"{l}.post_mlp", scales, False)[1]
            if output_hook == "hook_mlp_out":
                m = m + pending[l]
            r = r + m
        _, z = _norm_apply(r, self.w.final_norm, "final", scales, False)
        logits = _lin(z, self.w.W_U, self.w.b_U)
        if self.w.final_softcap is not None:
            logits = torch.tanh(logits / self.w.final_softcap) * self.w.final_softcap
        return logits

    # --- frozen replacement model ---------------------------------------------------------
    def frozen_fn(
        self,
        clean: CleanRun,
        input_hook: str = "hook_resid_mid",
        output_hook: str = "hook_mlp_out",
        skip: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    ):
        """f(emb (T,d), inj (L,T,d)) -> (x_in (L,T,d), z (T,d), logits_pre (T,V)), affine.

        inj is added to the MLP value at the transcoder output site of each layer; `skip(l, x)`
        is the (linear) skip map of layer l, kept live.
        """
        w = self.w
        scales = clean.scales
        patterns = clean.patterns
        site_clean = clean.output_site(output_hook)
        x_clean = clean.input_site(input_hook)
        pos = clean.pos

        def f(emb: torch.Tensor, inj: torch.Tensor):
            r = emb + pos
            xs = []
            for l, ly in enumerate(w.layers):
                _, h = _norm_apply(r, ly.norm1, f"{l}.norm1", scales, True)
                att = _attention(h, ly.attn, l, patterns, scales, True)
                if ly.post_attn_norm is not None:
                    att = _norm_apply(att, ly.post_attn_norm, f"{l}.post_attn", scales, True)[1]
                r = r + att
                pre, x = _norm_apply(r, ly.norm2, f"{l}.norm2", scales, True)
                x_in = {"hook_resid_mid": r, "ln2.hook_normalized": pre, "mlp.hook_in": x}[input_hook]
                xs.append(x_in)
                val = site_clean[l] + inj[l]
                if skip is not None:
                    val = val + skip(l, x_in) - skip(l, x_clean[l])
                if output_hook == "mlp.hook_out" and ly.post_mlp_norm is not None:
                    val = _norm_apply(val, ly.post_mlp_norm, f"{l}.post_mlp", scales, True)[1]
                r = r + val
            _, z = _norm_apply(r, w.final_norm, "final", scales, True)
            return torch.stack(xs), z, _lin(z, w.W_U, w.b_U)

        return f


# ----------------------------------------------------------------------------------------
# Transcoder bookkeeping
# ----------------------------------------------------------------------------------------
def transcoders_f64(tc):
    t = copy.deepcopy(tc)
    return t.to(dtype=F64)


def _activate(tc, l: int, pre: torch.Tensor) -> torch.Tensor:
    """The transcoder nonlinearity, re-implemented here (not Transcoders.activate)."""
    if tc.activation == "relu":
        return torch.where(pre > 0, pre, torch.zeros_like(pre))
    if tc.activation == "jumprelu":
        return torch.where(pre > tc.threshold[l], pre, torch.zeros_like(pre))
    if tc.activation == "topk":
        out = torch.zeros_like(pre)
        for p in range(pre.shape[0]):
            order = torch.argsort(pre[p], descending=True)[: tc.k]
            keep = order[pre[p, order] > 0]
            out[p, keep] = pre[p, keep]
        return out
    raise ValueError(tc.activation)


def transcoder_state(tc, clean: CleanRun) -> dict[str, Any]:
    """Activations (zeroed at BOS), reconstruction and error vectors at the clean run.

    Encoder, activation and reconstruction are written out here from the raw weights:
    recon[l'] = sum_{l <= l'} a_l @ W_dec[l][:, l' - l] + b_dec[l'] + x[l'] @ W_skip[l'].T.
    """
    x = clean.input_site(tc.input_hook)
    L, T, d = x.shape
    acts = []
    for l in range(L):
        a = _activate(tc, l, x[l] @ tc.W_enc[l].T + tc.b_enc[l])
        a[0] = 0
        acts.append(a)
    recon = torch.zeros(L, T, d, dtype=x.dtype)
    for lo in range(L):
        recon[lo] = tc.b_dec[lo]
        if tc.W_skip is not None:
            recon[lo] = recon[lo] + x[lo] @ tc.W_skip[lo].T
        for l in range(lo + 1):
            if lo - l < tc.W_dec[l].shape[1]:
                recon[lo] = recon[lo] + acts[l] @ tc.W_dec[l][:, lo - l, :]
    err = clean.output_site(tc.output_hook) - recon
    err[:, 0] = 0
    return {"x_in": x, "acts": acts, "recon": recon, "errors": err}


def _skip_fn(tc):
    if tc.W_skip is None:
        return None
    return lambda l, x: x @ tc.W_skip[l].T


# ----------------------------------------------------------------------------------------
# The oracle adjacency
# ----------------------------------------------------------------------------------------
def oracle_adjacency(hf_model, transcoders, input_ids, logit_token_ids, oracle: OracleModel | None = None) -> dict:
    """Dense float64 adjacency in circuit_atlas Graph node order.

    Returns a dict with
      features (nF, 3) long [layer, pos, feature], activations (nF,), errors (nE, 2) long [layer, pos],
      embeddings (T,) positions, logits (K,) token ids, kinds (N,) codes (0 feat, 1 err, 2 emb, 3 logit),
      adjacency (N, N) float64 [target, source], values (N,) target values (feature pre-activation
      minus b_enc; demeaned pre-softcap logit; 0 for source-only nodes), constants (N,) the
      all-sources-zeroed value of each target, plus internals (clean run, oracle, frozen fn, sources).
    """
    om = oracle if oracle is not None else OracleModel(hf_model)
    tc = transcoders_f64(transcoders)
    ids = torch.as_tensor(input_ids).long().reshape(-1)
    T, L, d = ids.shape[0], om.n_layers, om.d_model
    clean = om.clean(ids)
    st = transcoder_state(tc, clean)
    acts, err, x_clean = st["acts"], st["errors"], st["x_in"]
    logit_ids = torch.as_tensor(list(int(t) for t in logit_token_ids)).long()
    K = logit_ids.shape[0]

    # --- nodes ------------------------------------------------------------------------
    feats = []
    for l in range(L):
        nz = (acts[l] != 0).nonzero()  # (n, 2) [pos, f], row-major => sorted by (pos, f)
        for p, f in nz.tolist():
            feats.append((l, p, f))
    feats.sort()
    nF = len(feats)
    feat_t = torch.tensor(feats, dtype=torch.long).reshape(-1, 3)
    act_vals = torch.tensor([float(acts[l][p, f]) for l, p, f in feats], dtype=F64)
    errs = [(l, p) for l in range(L) for p in range(1, T)]
    nE = len(errs)
    N = nF + nE + T + K
    n_src = nF + nE + T
    kinds = torch.cat([torch.zeros(nF), torch.ones(nE), torch.full((T,), 2.0), torch.full((K,), 3.0)]).long()

    # --- Jacobians of the frozen model ---------------------------------------------------
    f = om.frozen_fn(clean, tc.input_hook, tc.output_hook, _skip_fn(tc))

    def g(emb, inj):
        x, z, _ = f(emb, inj)
        return x, z[T - 1]

    emb0 = clean.emb.clone()
    inj0 = torch.zeros(L, T, d, dtype=F64)
    (Jx_e, Jx_i), (Jz_e, Jz_i) = torch.func.jacrev(g, argnums=(0, 1))(emb0, inj0)
    # Jx_e (L,T,d, T,d); Jx_i (L,T,d, L,T,d); Jz_e (d, T,d); Jz_i (d, L,T,d)

    # --- source vectors as (L_out, T, d) injections and embedding vectors -----------------
    # Column blocks of the Jacobian contracted with source vectors.
    # Target rows: feature (l,p,f): W_enc[l][f] . x_in[l,p];  logit t: (u_t - mean u) . z[T-1]
    # Jacobian of every target w.r.t. the injections and embeddings
    enc_rows = torch.stack([tc.W_enc[l][fi] for l, p, fi in feats]) if nF else torch.zeros(0, d, dtype=F64)
    Jt_i = torch.zeros(nF + K, L, T, d, dtype=F64)
    Jt_e = torch.zeros(nF + K, T, d, dtype=F64)
    for i, (l, p, _fi) in enumerate(feats):
        Jt_i[i] = torch.einsum("d,dmte->mte", enc_rows[i], Jx_i[l, p])
        Jt_e[i] = torch.einsum("d,dte->te", enc_rows[i], Jx_e[l, p])
    U = om.w.W_U
    Ubar = U - U.mean(0, keepdim=True)
    V_logit = Ubar[logit_ids]  # (K, d)
    Jt_i[nF:] = torch.einsum("kd,dmte->kmte", V_logit, Jz_i)
    Jt_e[nF:] = torch.einsum("kd,dte->kte", V_logit, Jz_e)

    # source vectors: S_i (n_src, L, T, d) injections at MLP output sites, S_e (n_src, T, d) embeddings
    S_i = torch.zeros(n_src, L, T, d, dtype=F64)
    S_e = torch.zeros(n_src, T, d, dtype=F64)
    for j, (l, p, fi) in enumerate(feats):
        dec = tc.W_dec[l][fi]  # (n_out, d)
        S_i[j, l : l + dec.shape[0], p] = acts[l][p, fi] * dec
    for j, (l, p) in enumerate(errs):
        S_i[nF + j, l, p] = err[l, p]
    for p in range(T):
        S_e[nF + nE + p, p] = clean.emb[p]
    rows = Jt_i.reshape(nF + K, -1) @ S_i.reshape(n_src, -1).T + Jt_e.reshape(nF + K, -1) @ S_e.reshape(n_src, -1).T

    adjacency = torch.zeros(N, N, dtype=F64)
    adjacency[:nF, :n_src] = rows[:nF]
    adjacency[N - K :, :n_src] = rows[nF:]

    # --- values and constants ------------------------------------------------------------
    x_now, z_now, lp_now = f(clean.emb, inj0)
    values = torch.zeros(N, dtype=F64)
    constants = torch.zeros(N, dtype=F64)
    # all sources zeroed: embeddings 0 everywhere, MLP output at p>=1 = b_dec + skip(x live)
    site = clean.output_site(tc.output_hook)
    inj_zero = torch.zeros(L, T, d, dtype=F64)
    for l in range(L):
        keep = tc.b_dec[l].expand(T, d).clone()
        if tc.W_skip is not None:
            keep = keep + x_clean[l] @ tc.W_skip[l].T  # cancels the clean skip; live skip re-added in f
        inj_zero[l, 1:] = (keep - site[l])[1:]
    x0, z0, _ = f(torch.zeros(T, d, dtype=F64), inj_zero)
    for i, (l, p, _fi) in enumerate(feats):
        values[i] = x_now[l, p] @ enc_rows[i]
        constants[i] = x0[l, p] @ enc_rows[i]
    values[N - K :] = V_logit @ z_now[T - 1]
    constants[N - K :] = V_logit @ z0[T - 1]

    return {
        "features": feat_t,
        "activations": act_vals,
        "errors": torch.tensor(errs, dtype=torch.long).reshape(-1, 2),
        "embeddings": torch.arange(T),
        "logits": logit_ids,
        "kinds": kinds,
        "adjacency": adjacency,
        "values": values,
        "constants": constants,
        "n_sources": n_src,
        "clean": clean,
        "oracle": om,
        "frozen": f,
        "state": st,
        "transcoders": tc,
        "inj_zero": inj_zero,
        "source_inj": S_i,
        "source_emb": S_e,
    }
