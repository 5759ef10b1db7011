"""Seeded random transcoder sets and threshold calibration, for tests and benchmarks.

`random_transcoders` draws every tensor from a torch.Generator seeded with `seed`, in float32 and
in a fixed order, then casts to `dtype`: the same seed gives the same numbers at any dtype.
Scales assume inputs x whose entries are O(1) (|x|^2 ~ d, a normalised residual stream):

    W_enc ~ N(0, 1/d)             so pre-activations h = x @ W_enc.T + b_enc have std ~ 1
    b_enc ~ N(0, 0.1^2),  b_dec ~ N(0, 0.1^2)
    threshold ~ U(0.5, 1.5)       JumpReLU only, always positive
    W_dec[l][:, j] ~ N(0, 1 / (S_l * n_j))
        S_l = expected sum over features of a_f^2 at layer l (from the Gaussian model of h), and
        n_j = number of source layers writing to output layer l + j (1 for a PLT, l + j + 1 for a
        CLT), so every reconstructed output has entries of variance ~ 1.
    W_skip ~ N(0, 0.25/d)         skip(x) = x @ W_skip.T has entries of std ~ 0.5

`calibrate_thresholds(tc, layer_inputs, target_l0, margin)` then fits a set to real inputs:
per layer it finds the cut c above which about target_l0 pre-activations per position lie, and
gives every feature f its own cut theta_f, the point nearest c such that no pre-activation of f
on the given inputs lies within margin * std_f of it (std_f: the std of f's pre-activations on
those inputs). JumpReLU sets get threshold = theta_f (kept > 0); ReLU sets get b_enc -= theta_f,
so the cut sits at 0. Because every given pre-activation is at least margin * std_f from its cut,
float32 and float64 runs on those inputs switch exactly the same features on.
"""

from __future__ import annotations

import math

import torch

from .transcoder import Transcoders


def _expected_sq_activation(activation: str, b: torch.Tensor, theta: torch.Tensor | None, k: int | None) -> float:
    """Sum over features of E[a_f^2] when h_f ~ N(b_f, 1) (TopK: b ~ 0 and a cut at the top k/F)."""
    F = b.shape[0]
    if activation == "topk":
        t = torch.special.ndtri(torch.tensor(1.0 - min(k, F) / F, dtype=torch.float64)).expand(F)
        b = torch.zeros(F, dtype=torch.float64)
    else:
        b = b.double()
        t = (theta.double() if activation == "jumprelu" else torch.zeros(F, dtype=torch.float64)) - b
    # h = b + Z, a = h * 1[Z > t]: E[a^2] = b^2 P(Z>t) + 2 b phi(t) + t phi(t) + P(Z>t)
    t = t.clamp(-40.0, 40.0)  # k = F gives t = -inf
    tail = 1.0 - torch.special.ndtr(t)
    phi = torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    return float((b**2 * tail + 2 * b * phi + t * phi + tail).sum().clamp_min(1e-6))


def random_transcoders(
    kind: str,
    n_layers: int,
    d_model: int,
    d_transcoder: int,
    *,
    activation: str = "jumprelu",
    k: int | None = None,
    skip: bool = False,
    input_hook: str = "hook_resid_mid",
    output_hook: str = "hook_mlp_out",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Transcoders:
    """A seeded random PLT or CLT set with O(1) pre-activations and reconstructions (see module docstring)."""
    if kind not in ("plt", "clt"):
        raise ValueError(f"kind must be 'plt' or 'clt', got {kind!r}")
    if n_layers < 1 or d_model < 1 or d_transcoder < 1:
        raise ValueError("n_layers, d_model and d_transcoder must be positive")
    if activation == "topk" and not k:
        raise ValueError("random_transcoders(activation='topk') needs k")
    g = torch.Generator().manual_seed(seed)
    L, d, F = n_layers, d_model, d_transcoder

    def normal(*shape: int, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    W_enc, b_enc, threshold, W_dec, b_dec, W_skip = [], [], [], [], [], []
    for l in range(L):
        W_enc.append(normal(F, d, std=d**-0.5))  # (F, d)
        b_enc.append(normal(F, std=0.1))
        theta = 0.5 + torch.rand(F, generator=g) if activation == "jumprelu" else None  # (F,) in [0.5, 1.5)
        threshold.append(theta)
        S = _expected_sq_activation(activation, b_enc[l], theta, k)
        n_out = 1 if kind == "plt" else L - l
        n_src = [1 if kind == "plt" else l + j + 1 for j in range(n_out)]
        scale = torch.tensor([(S * n) ** -0.5 for n in n_src]).view(1, n_out, 1)
        W_dec.append(normal(F, n_out, d) * scale)  # (F, n_out, d)
        b_dec.append(normal(d, std=0.1))
        W_skip.append(normal(d, d, std=0.5 * d**-0.5) if skip else None)  # (d, d)

    def cast(ts: list) -> list[torch.Tensor]:
        return [t.to(dtype) for t in ts]

    return Transcoders(
        kind=kind,
        W_enc=cast(W_enc),
        b_enc=cast(b_enc),
        W_dec=cast(W_dec),
        b_dec=cast(b_dec),
        activation=activation,
        threshold=cast(threshold) if activation == "jumprelu" else None,
        k=k,
        W_skip=cast(W_skip) if skip else None,
        input_hook=input_hook,
        output_hook=output_hook,
        name=f"random-{kind}-L{L}-d{d}-F{F}-seed{seed}",
        metadata={"random": {"seed": seed, "activation": activation, "k": k, "skip": skip}},
    )


def calibrate_thresholds(
    tc: Transcoders, layer_inputs: list[torch.Tensor], target_l0: float, margin: float = 0.05
) -> Transcoders:
    """Fit JumpReLU thresholds (or, for ReLU, a per-feature b_enc shift) to `layer_inputs`, in place.

    layer_inputs[l]: (T, d) transcoder inputs of layer l (the positions you will attribute; drop
    BOS yourself if it should not count). Afterwards about `target_l0` features are active per
    position, and no pre-activation on these inputs lies within margin * std_f of its cut (see
    the module docstring), so float32 and float64 agree on which features are active. Returns tc.
    """
    if tc.activation == "topk":
        raise ValueError("TopK transcoders have no thresholds to calibrate (k sets their L0)")
    if len(layer_inputs) != tc.n_layers:
        raise ValueError(f"calibrate_thresholds needs inputs for all {tc.n_layers} layers, got {len(layer_inputs)}")
    if target_l0 < 0 or margin < 0:
        raise ValueError("target_l0 and margin must be non-negative")
    jump = tc.activation == "jumprelu"
    for l, x in enumerate(layer_inputs):
        x = x.reshape(-1, tc.d_model).to(device=tc.W_enc[l].device, dtype=torch.float64)
        h = x @ tc.W_enc[l].double().T + tc.b_enc[l].double()  # (T, F)
        theta = _cuts(h, target_l0, margin, positive=jump)  # (F,)
        if jump:
            tc.threshold[l] = theta.to(tc.threshold[l].dtype)
        else:
            tc.b_enc[l] = (tc.b_enc[l].double() - theta).to(tc.b_enc[l].dtype)
    return tc


def _cuts(h: torch.Tensor, target_l0: float, margin: float, positive: bool) -> torch.Tensor:
    """Per-feature cuts (F,) for pre-activations h (T, F) (see calibrate_thresholds)."""
    T, F = h.shape
    if T == 0:
        raise ValueError("calibrate_thresholds needs at least one input position per layer")
    flat = h.flatten().sort(descending=True).values
    n_on = min(max(round(target_l0 * T), 0), T * F)
    if n_on == 0:
        c = flat[0] + 1.0
    elif n_on == T * F:
        c = flat[-1] - 1.0
    else:
        c = (flat[n_on - 1] + flat[n_on]) / 2
    layer_std = float(h.std()) if T * F > 1 and float(h.std()) > 0 else 1.0
    std = h.std(0, unbiased=False) if T > 1 else torch.zeros(F, dtype=h.dtype, device=h.device)
    r = margin * torch.where(std > 0, std, torch.full_like(std, layer_std))  # (F,)
    # The best cut is c itself, or an edge of a forbidden band [h - r, h + r] (nudged outwards).
    hs = h.T.sort(dim=1).values.contiguous()  # (F, T)
    edge = r[:, None] * (1 + 1e-6)
    lowest = r * (1 + 1e-6) if positive else torch.full_like(r, -math.inf)  # JumpReLU cuts stay > 0
    cand = torch.cat([c.expand(F, 1), hs - edge, hs + edge, lowest[:, None].clamp_min(-1e300)], dim=1)  # (F, 2T+2)
    idx = torch.searchsorted(hs, cand.contiguous())
    below = hs.gather(1, (idx - 1).clamp(min=0))
    above = hs.gather(1, idx.clamp(max=T - 1))
    dist = torch.minimum((cand - below).abs(), (above - cand).abs())  # distance to the nearest h
    ok = (dist >= r[:, None]) & (cand >= lowest[:, None])
    cost = torch.where(ok, (cand - c).abs(), torch.full_like(cand, math.inf))
    return cand.gather(1, cost.argmin(dim=1, keepdim=True)).squeeze(1)
