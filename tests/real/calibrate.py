"""Transcoders for a real model at one prompt, with thresholds calibrated on its activations.

Attribution edges are exact whatever the transcoders' reconstruction quality (the error nodes
take the rest), so the oracle only needs transcoders whose active set is unambiguous and of a
realistic size. Encoders are random directions scaled to the real activations' norm at each layer;
each feature's JumpReLU threshold sits in the middle of a gap between two of its pre-activations on
the prompt (positions >= 1) that is at least `margin` of their spread wide, so no pre-activation is
near a threshold and float32 or float64 runs agree on which features fire. A fraction
`frac_features_active` of features fire at exactly one position (the one above the gap), giving
L0 = frac * F / (T - 1) active features per position and layer, as in trained transcoders
(circuit-tracer's are at tens to ~100 per layer).
"""

from __future__ import annotations

import torch

from circuit_atlas.transcoders import Transcoders

F64 = torch.float64


def calibrated_transcoders(
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    *,
    kind: str = "plt",
    skip: bool = False,
    width: int = 512,
    frac_features_active: float = 0.3,
    margin: float = 0.2,
    input_hook: str = "hook_resid_mid",
    output_hook: str = "hook_mlp_out",
    seed: int = 0,
) -> Transcoders:
    """inputs, outputs (L, T, d) float64: the clean values at the input and output sites."""
    L, T, d = inputs.shape
    F = width
    gen = torch.Generator().manual_seed(seed)
    W_enc, b_enc, thr, W_dec, b_dec, W_skip = [], [], [], [], [], []
    for l in range(L):
        x = inputs[l, 1:]  # (T-1, d); BOS holds no features
        x_norm = float(x.norm(dim=-1).mean())
        W = torch.randn(F, d, generator=gen, dtype=F64) / x_norm  # pre-activations O(1)
        # Resample rows until the top pre-activation stands clear of the second (a clean gap).
        for _ in range(50):
            h = x @ W.T  # (T-1, F)
            s, _ = h.sort(dim=0, descending=True)
            spread = (s[0] - s[-1]).clamp_min(1e-12)
            ok = (s[0] - s[1]) >= margin * spread
            if bool(ok.all()):
                break
            W[~ok] = torch.randn(int((~ok).sum()), d, generator=gen, dtype=F64) / x_norm
        else:
            raise RuntimeError(f"could not calibrate layer {l}")
        active = torch.rand(F, generator=gen) < frac_features_active
        # Active features: cut between the top two values; inactive: above the top by half the spread.
        cut = torch.where(active, (s[0] + s[1]) / 2, s[0] + 0.5 * spread)
        theta = 0.1 * spread  # a positive threshold, as trained JumpReLUs have
        W_enc.append(W)
        b_enc.append(theta - cut)
        thr.append(theta)
        n_out = 1 if kind == "plt" else L - l
        out_norm = float(outputs[l, 1:].norm(dim=-1).mean())
        W_dec.append(torch.randn(F, n_out, d, generator=gen, dtype=F64) * out_norm / d**0.5 / 4)
        b_dec.append(torch.randn(d, generator=gen, dtype=F64) * 0.1 * out_norm / d**0.5)
        if skip:
            W_skip.append(torch.randn(d, d, generator=gen, dtype=F64) * 0.3 * out_norm / (x_norm * d**0.5))
    return Transcoders(
        kind=kind,
        W_enc=W_enc,
        b_enc=b_enc,
        W_dec=W_dec,
        b_dec=b_dec,
        activation="jumprelu",
        threshold=thr,
        W_skip=W_skip if skip else None,
        input_hook=input_hook,
        output_hook=output_hook,
        name=f"calibrated-{kind}{'-skip' if skip else ''}",
    )
