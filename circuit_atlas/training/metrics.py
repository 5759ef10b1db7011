"""Quality of a transcoder set on held-out sequences.

Reconstruction (over every position but BOS, raw model units, exported set):
    fvu[l]            sum |y - y_hat|^2 / sum |y - mean(y)|^2 at layer l's output site
    l0[l]             mean number of active features per token
    dead_fraction[l]  fraction of layer l's features active on no held-out token

Replacement model (every MLP replaced by its reconstruction, errors removed, BOS kept real; see
models/hooks.py `replaced_mlps`), at every position but BOS:
    top1_agreement    fraction of positions whose argmax next token equals the real model's
    kl                mean KL(real || replacement) of the next-token distributions, in nats

`quality_warnings` says in plain words when a finished set is poor (many dead features, a high
FVU, an L0 far from the one asked for) and what to try.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attribution.context import ZERO_POSITIONS
from ..models.architectures import Architecture
from ..models.hooks import harvest, replaced_mlps
from ..transcoders.transcoder import Transcoders
from .config import PENALIZED, TrainConfig
from .data import trim_padding

SKIP_POSITIONS = ZERO_POSITIONS  # BOS: attribution gives it no feature or error nodes either
# Where a finished set counts as poor. The shipped toy world's sets: 11 % dead, FVU 0.01, L0 within 5 %.
DEAD_WARNING = 0.3  # fraction of features that never fire on the held-out text
FVU_WARNING = 0.2  # mean fraction of the MLP output's variance left unexplained
L0_WARNING = 0.3  # relative distance of the mean L0 from k / target_l0


class TrainingQualityWarning(UserWarning):
    """A finished transcoder set is poor (see quality_warnings)."""


@torch.no_grad()
def evaluate(hf_model: nn.Module, arch: Architecture, tc: Transcoders, sequences: torch.Tensor,
             valid: torch.Tensor | None = None, batch_size: int = 16) -> dict:  # fmt: skip
    """Metrics of `tc` on token sequences (n, T) that all start with BOS; valid (n, T) marks non-pad positions."""
    if len(sequences) == 0:
        raise ValueError("no held-out sequences to evaluate on")
    L, F_max = tc.n_layers, max(tc.width(l) for l in range(tc.n_layers))
    device = next(hf_model.parameters()).device
    err = torch.zeros(L, dtype=torch.float64)
    y_sum = torch.zeros(L, tc.d_model, dtype=torch.float64)
    y_sq = torch.zeros(L, dtype=torch.float64)
    active = torch.zeros(L, dtype=torch.float64)
    fired = torch.zeros(L, F_max, dtype=torch.bool)
    n_tokens = 0
    agree, kl, n_pos = 0, 0.0, 0
    if valid is None:
        valid = torch.ones_like(sequences, dtype=torch.bool)
    for i in range(0, len(sequences), batch_size):
        ids, keep = trim_padding(sequences[i : i + batch_size], valid[i : i + batch_size])
        ids, keep = ids.to(device), keep.to(device).clone()
        keep[:, :SKIP_POSITIONS] = False
        X, Y = harvest(hf_model, ids, tc.input_hook, tc.output_hook, arch=arch)
        X, Y = X[:, keep].to(tc.dtype), Y[:, keep].to(tc.dtype)  # (L, N, d)
        acts = [tc.activate(l, tc.encode(l, X[l])) for l in range(L)]
        Y_hat = tc.reconstruct(acts, X)
        err += (Y - Y_hat).double().pow(2).sum((1, 2)).cpu()
        y_sum += Y.double().sum(1).cpu()
        y_sq += Y.double().pow(2).sum((1, 2)).cpu()
        for l, a in enumerate(acts):
            on = a != 0
            active[l] += on.sum().item()
            fired[l, : a.shape[-1]] |= on.any(0).cpu()
        n_tokens += X.shape[1]

        real = hf_model(input_ids=ids, use_cache=False).logits[keep].float()  # (N, V)
        with replaced_mlps(hf_model, tc, arch=arch, keep_positions=SKIP_POSITIONS):
            repl = hf_model(input_ids=ids, use_cache=False).logits[keep].float()
        agree += (real.argmax(-1) == repl.argmax(-1)).sum().item()
        logp, logq = real.log_softmax(-1), repl.log_softmax(-1)
        kl += (logp.exp() * (logp - logq)).sum().item()
        n_pos += real.shape[0]

    var = y_sq - y_sum.pow(2).sum(-1) / n_tokens
    fvu = (err / var.clamp_min(1e-30)).tolist()
    l0 = (active / n_tokens).tolist()
    widths = [tc.width(l) for l in range(L)]
    dead = [1.0 - fired[l, : widths[l]].float().mean().item() for l in range(L)]
    return {
        "fvu": fvu,
        "fvu_mean": sum(fvu) / L,
        "l0": l0,
        "l0_mean": sum(l0) / L,
        "dead_fraction": dead,
        "dead_fraction_mean": sum(d * w for d, w in zip(dead, widths)) / sum(widths),
        "top1_agreement": agree / n_pos,
        "kl": kl / n_pos,
        "n_tokens": n_tokens,
        "n_sequences": len(sequences),
    }


def quality_warnings(metrics: dict, cfg: TrainConfig) -> list[str]:
    """One plain sentence per way the metrics of a finished set are poor, each with what to try."""
    out = []
    if not metrics or "fvu_mean" not in metrics:
        return out
    penalized = cfg.activation in PENALIZED
    dead, fvu, l0 = metrics["dead_fraction_mean"], metrics["fvu_mean"], metrics["l0_mean"]
    if dead > DEAD_WARNING:
        fix = ("lower the sparsity (a higher --target-l0, or a lower --sparsity-coefficient)" if penalized
               else "raise --k")  # fmt: skip
        out.append(f"{dead:.0%} of the features never fired on the held-out text (dead): train longer (--steps), "
                   f"{fix}, or use fewer features (--width)")  # fmt: skip
    if fvu > FVU_WARNING:
        more = "--target-l0" if penalized else "--k"
        out.append(f"the reconstruction is poor: FVU {fvu:.3f} ({fvu:.0%} of the MLP output's variance unexplained); "
                   f"train longer (--steps), widen (--width), allow more active features ({more})"
                   + (" or add a skip connection (--skip)" if not cfg.skip else ""))  # fmt: skip
    asked = cfg.target_l0 if penalized else cfg.k
    if asked is not None and abs(l0 / asked - 1) > L0_WARNING:
        how = ("the sparsity control did not reach it: train longer (--steps), or start from a sparsity coefficient "
               "closer to the one it ended at (--sparsity-coefficient; see metrics.json)" if penalized
               else "its calibrated thresholds do not carry over to the held-out text: check that it is like the "
               "training text" if cfg.activation == "batchtopk"
               else "fewer than k features have a positive pre-activation on many tokens: train longer (--steps)")  # fmt: skip
        name = "target_l0" if penalized else "k"
        out.append(f"L0 is {l0:.1f} active features per token and layer where {name} = {asked:g} was asked: {how}")
    return out
