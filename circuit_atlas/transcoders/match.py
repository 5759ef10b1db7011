"""Are these transcoders trained on this model? Two checks, both refusing with both names.

1. At load, from what the files record: the model name (our `metadata.model`, circuit-tracer's
   `model_name`), the hook sites they were trained at (`metadata.training`), and, where recorded, a
   fingerprint {architecture, n_layers, d_model, vocab_size} (`metadata.model_fingerprint`).
   Names are compared loosely, because the same model moves between directories: the recorded
   name's last component ("gpt2" of "out/gpt2", "gemma-2-2b" of "google/gemma-2-2b") must be one of
   the components of the model's names (its given name, directory, and config._name_or_path; a Hub
   cache path "models--google--gemma-2-2b/snapshots/<hash>" counts as "google/gemma-2-2b").
2. On each prompt, numerically: the reconstruction error of the MLP outputs, pooled over layers
   and positions p >= 1 (BOS excluded),

       err = sum_lp ||y_lp - yhat_lp||^2 / sum_lp ||y_lp||^2

   must not be far above the set's recorded FVU (metrics.json beside the weights): refused when
   err > max(ERROR_FLOOR, ERROR_FACTOR * recorded mean FVU). Measured on the toy world (CLT, FVU
   0.008): the right model gives 0.002 on the Dallas prompt and at most 1.6 on text far outside its
   world ("1 2 3 4 5 6 7 8 9", "zzzz qqq !!! ###"); the same-shaped model with other weights gives
   64 to 210. Sets without recorded metrics (random ones, most downloaded sets) skip this check.

`allow_model_mismatch=True` (CLI `--allow-model-mismatch`) turns both checks off.
"""

from __future__ import annotations

import re

import torch

ERROR_FLOOR = 3.0
ERROR_FACTOR = 30.0
OVERRIDE = "pass allow_model_mismatch=True (CLI: --allow-model-mismatch) to use them anyway"


def recorded_model(metadata: dict) -> str | None:
    name = metadata.get("model") or metadata.get("model_name")
    return str(name) if name else None


def _components(name: str) -> set[str]:
    name = re.sub(r"models--([^/]+)--([^/]+)", r"\1/\2", str(name))  # Hub cache directories
    return {part.lower() for part in re.split(r"[/\\]+", name) if part}


def names_match(recorded: str, model_names: list[str]) -> bool:
    parts = [p for p in re.split(r"[/\\]+", recorded.rstrip("/\\")) if p]
    last = parts[-1].lower() if parts else recorded.lower()
    return any(last in _components(n) for n in model_names if n)


def model_fingerprint(model) -> dict:
    """What identifies a model's shape and vocabulary (record it beside transcoders you train)."""
    return {
        "architecture": model.architecture.name,
        "n_layers": model.n_layers,
        "d_model": model.d_model,
        "vocab_size": model.vocab_size,
    }


def check_recorded_model(tc, model, model_names: list[str]) -> None:
    """Check 1: refuse transcoders whose files say they belong to another model."""
    shown = model_names[0] if model_names else "this model"
    recorded_print = tc.metadata.get("model_fingerprint")
    if isinstance(recorded_print, dict):
        ours = model_fingerprint(model)
        diff = [
            f"{k} {recorded_print[k]!r} vs {ours[k]!r}"
            for k in ours
            if k in recorded_print and recorded_print[k] != ours[k]
        ]
        if diff:
            raise ValueError(
                f"transcoders {tc.name!r} were trained on model {recorded_model(tc.metadata) or '(unnamed)'!r}, "
                f"which differs from {shown!r} in {', '.join(diff)}; load the transcoders trained for "
                f"{shown!r}, or {OVERRIDE}"
            )
    training = tc.metadata.get("training") if isinstance(tc.metadata.get("training"), dict) else {}
    for role, used in (("input_hook", tc.input_hook), ("output_hook", tc.output_hook)):
        trained = training.get(role)
        if trained and trained != used:
            raise ValueError(
                f"transcoders {tc.name!r} were trained with {role} {trained!r} but are set to read {used!r}; "
                f"load them with their own hook sites (drop the {role} override), or {OVERRIDE}"
            )
    check_recorded_name(tc, model_names)


def check_recorded_name(tc, model_names: list[str]) -> None:
    """The name part of check 1 (needs no loaded model, so it runs before the weights load)."""
    shown = model_names[0] if model_names else "this model"
    recorded = recorded_model(tc.metadata)
    if recorded and not names_match(recorded, model_names):
        raise ValueError(
            f"transcoders {tc.name!r} were trained on model {recorded!r}, but this model is {shown!r}; load "
            f"the transcoders trained for {shown!r}, or, if this is {recorded!r} under another name, {OVERRIDE}"
        )


def recorded_fvu(metadata: dict) -> float | None:
    metrics = metadata.get("metrics") or {}
    fvu = metrics.get("fvu_mean")
    if fvu is None and isinstance(metrics.get("fvu"), list) and metrics["fvu"]:
        fvu = sum(metrics["fvu"]) / len(metrics["fvu"])
    return float(fvu) if fvu is not None else None


@torch.no_grad()
def reconstruction_error(tc, feature_inputs: torch.Tensor, mlp_outputs: torch.Tensor) -> float | None:
    """err of one prompt from its transcoder inputs and true outputs (L, T, d); None without positions >= 1."""
    x = feature_inputs[:, 1:].to(tc.dtype)
    y = mlp_outputs[:, 1:].double()
    if x.shape[1] == 0:
        return None
    acts = [tc.activate(l, tc.encode(l, x[l])) for l in range(tc.n_layers)]
    yhat = tc.reconstruct(acts, x).double()
    return float((y - yhat).pow(2).sum() / y.pow(2).sum().clamp_min(1e-30))


def check_reconstruction(tc, model_name: str, feature_inputs: torch.Tensor, mlp_outputs: torch.Tensor) -> None:
    """Check 2: refuse when the transcoders reconstruct this prompt far worse than their recorded FVU."""
    fvu = recorded_fvu(tc.metadata)
    if fvu is None:
        return
    err = reconstruction_error(tc, feature_inputs, mlp_outputs)
    limit = max(ERROR_FLOOR, ERROR_FACTOR * fvu)
    if err is not None and err > limit:
        trained_on = recorded_model(tc.metadata) or "another model"
        raise ValueError(
            f"transcoders {tc.name!r} (trained on {trained_on!r}) do not fit model {model_name!r}: on this prompt "
            f"their reconstruction error is {err:.3g} times the MLP outputs' energy (recorded FVU {fvu:.3f}; "
            f"refused above {limit:.3g}), so a graph would explain nothing; load the transcoders trained for "
            f"{model_name!r}, or {OVERRIDE}"
        )
