"""The forward pass under interventions, and generation with a key/value cache.

At layer l, each intervened feature f at position p gets a target activation (an absolute
value, or a multiple of its current activation) and the difference delta = target - current
is written through the feature's decoder, into layer l's MLP output and, for a CLT, into
every later layer it writes to. What "current" means and what else moves depends on the mode:

    free               everything downstream is live: attention, norms, the real MLPs; current
                       activations are re-encoded from the perturbed run itself.
    frozen_attention   as free, but attention patterns are held at the clean prompt's.
    constrained(L)     attention frozen; at the layers in L the MLP output is held at its clean
                       value (plus the skip path's change and the decoder deltas), and current
                       activations are the clean ones. With every layer constrained the norm
                       scales are frozen too: this is exactly the linear model the attribution
                       graph describes, so setting a feature to twice its clean value moves every
                       downstream pre-activation by its graph edge (tested).

Modes shape the prompt. Generated tokens have no clean run to freeze against, so they run
free (their attention over the cached prompt included), with the interventions that cover
their positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from ..models.cache import LayerCache
from ..models.forward import CleanRun
from ..models.layers import Options, Replacement, embed, run_layers
from .spec import Feature, Intervention, Supernode

MODES = ("free", "frozen_attention", "constrained")


@dataclass(frozen=True)
class Mode:
    kind: str  # one of MODES
    layers: frozenset[int] | None = None  # constrained layers; None means all

    def constrains(self, layer: int) -> bool:
        return self.kind == "constrained" and (self.layers is None or layer in self.layers)


FREE = Mode("free")
FROZEN_ATTENTION = Mode("frozen_attention")


def constrained(layers: Iterable[int] | None = None) -> Mode:
    """Direct effects only at `layers` (all layers if None); attention frozen."""
    return Mode("constrained", None if layers is None else frozenset(int(l) for l in layers))


def as_mode(mode: Mode | str, n_layers: int) -> Mode:
    if isinstance(mode, str):
        if mode not in MODES:
            raise ValueError(
                f"unknown mode {mode!r}; use 'free', 'frozen_attention', 'constrained' or constrained(layers)"
            )
        mode = Mode(mode)
    if not isinstance(mode, Mode):
        raise ValueError(f"mode must be a string or constrained(layers), got {mode!r}")
    if mode.layers is not None:
        bad = sorted(l for l in mode.layers if not 0 <= l < n_layers)
        if bad:
            raise ValueError(f"constrained layers {bad} do not exist; the model has layers 0..{n_layers - 1}")
        if len(mode.layers) == n_layers:
            mode = Mode("constrained")
    return mode


# --- resolving interventions into per-layer edits ----------------------------------------------
@dataclass(frozen=True)
class Edit:
    """One feature at a set of positions: [start, stop) by step (stop None: open-ended)."""

    layer: int
    index: int
    start: int
    stop: int | None
    step: int
    value: float | None
    scale: float | None

    def positions(self, lo: int, hi: int) -> list[int]:
        """The absolute positions in [lo, hi) this edit covers."""
        stop = hi if self.stop is None else min(self.stop, hi)
        first = self.start if self.start >= lo else self.start + -(-(lo - self.start) // self.step) * self.step
        return list(range(first, stop, self.step))


def _span(position, n_prompt: int, n_total: int) -> tuple[int, int | None, int]:
    """(start, stop, step) of a position spec; negative numbers count from the prompt's end."""
    if isinstance(position, str):
        if position != "all":
            raise ValueError(f"position {position!r} is not understood; use an int, a slice or 'all'")
        return 0, None, 1
    if isinstance(position, slice):
        step = 1 if position.step is None else int(position.step)
        if step <= 0:
            raise ValueError(f"position slice {position} must have a positive step")
        start = 0 if position.start is None else int(position.start)
        start = start + n_prompt if start < 0 else start
        stop = None if position.stop is None else int(position.stop)
        if stop is not None and stop < 0:
            stop += n_prompt
        if start < 0 or (stop is not None and stop <= start):
            raise ValueError(f"position slice {position} selects no position of the {n_prompt}-token prompt")
        if start >= n_total:
            raise ValueError(f"position slice {position} starts after the last position ({n_total - 1})")
        return start, stop, step
    if isinstance(position, (int, torch.Tensor)) and not isinstance(position, bool):
        p = int(position)
        p = p + n_prompt if p < 0 else p
        if not 0 <= p < n_total:
            where = "prompt" if n_total == n_prompt else "prompt plus generated tokens"
            raise ValueError(
                f"position {int(position)} does not exist: the {where} has positions 0..{n_total - 1} "
                f"(negative positions count back from the prompt's last token)"
            )
        return p, p + 1, 1
    raise ValueError(f"position {position!r} is not understood; use an int, a slice or 'all'")


def resolve(interventions: Sequence[Intervention], transcoders, n_prompt: int, n_total: int) -> list[Edit]:
    """Expand supernodes, check every layer, feature and position, refuse double edits."""
    if isinstance(interventions, Intervention):
        interventions = [interventions]
    edits: list[Edit] = []
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise ValueError(f"expected Intervention objects (see circuit_atlas.interventions), got {iv!r}")
        if isinstance(iv.subject, Supernode):
            features = iv.subject.all_features()
            if not features:
                raise ValueError(f"supernode {iv.subject.name!r} has no features to intervene on")
            targets = [((f.layer, f.index), f.position) for f in features]
        elif isinstance(iv.subject, Feature):
            targets = [((iv.subject.layer, iv.subject.index), iv.subject.position)]
        else:
            targets = [(tuple(iv.subject), iv.position)]
        for (layer, index), position in targets:
            layer, index = int(layer), int(index)
            if not 0 <= layer < transcoders.n_layers:
                raise ValueError(
                    f"layer {layer} does not exist; the transcoders have layers 0..{transcoders.n_layers - 1}"
                )
            width = transcoders.width(layer)
            if not 0 <= index < width:
                raise ValueError(
                    f"feature {index} does not exist at layer {layer}; that layer has features 0..{width - 1}"
                )
            start, stop, step = _span(position, n_prompt, n_total)
            edits.append(Edit(layer, index, start, stop, step, iv.value, iv.scale))
    seen: dict[tuple[int, int, int], int] = {}
    for e in edits:
        for p in e.positions(0, n_total):
            key = (e.layer, e.index, p)
            if key in seen:
                raise ValueError(
                    f"feature {e.index} at layer {e.layer}, position {p} is intervened on twice; give it one value"
                )
            seen[key] = 1
    return edits


# --- the sparse activations a run reports ------------------------------------------------------
class FeatureActivations:
    """Transcoder activations of a run, one sparse (T, F_l) tensor per layer."""

    def __init__(self, per_layer: list[torch.Tensor]):
        self.per_layer = [a.to_sparse().coalesce() if not a.is_sparse else a.coalesce() for a in per_layer]
        self._lookup: dict[tuple[int, int, int], float] | None = None

    @property
    def n_layers(self) -> int:
        return len(self.per_layer)

    def dense(self, layer: int) -> torch.Tensor:
        return self.per_layer[layer].to_dense()

    def active(self, layer: int | None = None) -> list[tuple[Feature, float]]:
        """(Feature, activation) of every non-zero entry, layer-major."""
        out = []
        for l in range(self.n_layers) if layer is None else [layer]:
            a = self.per_layer[l]
            for (p, f), v in zip(a.indices().T.tolist(), a.values().tolist()):
                out.append((Feature(l, p, f), v))
        return out

    def value(self, feature: Feature) -> float:
        if self._lookup is None:
            self._lookup = {tuple(f): v for f, v in self.active()}
        return self._lookup.get(tuple(Feature(*feature)), 0.0)

    def __getitem__(self, feature: Feature | tuple[int, int, int]) -> float:
        return self.value(Feature(*feature))


@dataclass
class StepOutput:
    logits: torch.Tensor  # (n, V) as the model outputs them (soft-capped where the model caps)
    logits_pre_softcap: torch.Tensor  # (n, V)
    activations: list[torch.Tensor]  # L x (n, F_l), dense, with intervened entries at their targets
    pre_activations: list[torch.Tensor]  # L x (n, F_l)


class InterventionRunner:
    """Runs positions [cache length, +n) of one sequence under a fixed set of edits."""

    def __init__(self, model, edits: list[Edit], mode: Mode, clean: CleanRun | None, n_prompt: int):
        if mode.kind != "free" and clean is None:
            raise ValueError(f"mode {mode.kind!r} needs the clean run of the prompt")
        self.w, self.tc = model.weights, model.transcoders
        self.edits, self.mode, self.clean, self.n_prompt = edits, mode, clean, n_prompt
        self.caches = [LayerCache() for _ in range(self.w.n_layers)]
        self.clean_acts = None  # the "current" activations of constrained layers
        if clean is not None and mode.kind == "constrained":
            self.clean_acts = [
                self.tc.activate(l, self.tc.encode(l, clean.feature_inputs[l])) for l in range(self.w.n_layers)
            ]

    @property
    def length(self) -> int:
        return self.caches[0].length

    @torch.no_grad()
    def step(self, new_ids: torch.Tensor) -> StepOutput:
        w, tc, c = self.w, self.tc, self.clean
        lo = self.length
        n = new_ids.shape[0]
        hi = lo + n
        # Clean values exist only for the prompt, and only a pass over the whole prompt can use them.
        on_prompt = c is not None and lo == 0 and hi == self.n_prompt
        freeze_attention = on_prompt and self.mode.kind in ("frozen_attention", "constrained")
        freeze_norms = on_prompt and self.mode.kind == "constrained" and self.mode.layers is None
        replaced = on_prompt and self.mode.kind == "constrained"

        embeddings = embed(w, new_ids)
        pending = torch.zeros((w.n_layers, n, w.d_model), dtype=embeddings.dtype, device=embeddings.device)
        acts_out, pre_out = [], []

        def edit(l: int, x_in: torch.Tensor) -> torch.Tensor:
            """Encode layer l's features, move the intervened ones to their targets through the decoder."""
            pre = tc.encode(l, x_in)
            acts = tc.activate(l, pre)
            reference = self.clean_acts[l] if replaced and self.mode.constrains(l) else acts
            for e in (e for e in self.edits if e.layer == l):
                local = [p - lo for p in e.positions(lo, hi)]
                if not local:
                    continue
                idx = torch.tensor(local, device=x_in.device)
                current = reference[idx, e.index]
                target = torch.full_like(current, e.value) if e.value is not None else current * e.scale
                delta = target - current
                for j, out_layer in enumerate(tc.output_layers(l)):
                    pending[out_layer, idx] += delta[:, None] * tc.W_dec[l][e.index, j]
                acts[idx, e.index] = target
            acts_out.append(acts)
            pre_out.append(pre)
            return pending[l]

        opts = Options(
            tc.input_hook,
            tc.output_hook,
            patterns=c.patterns if freeze_attention else None,
            scales=c.scales if freeze_norms else None,
            final_scale=c.final_scale if freeze_norms else None,
            # constrained layers: the MLP output held at its clean value (plus skip change and edits)
            replace=Replacement(c.mlp_outputs, c.feature_inputs, tc, self.mode.layers) if replaced else None,
            edit=edit,
            caches=self.caches,
        )
        t = run_layers(w, embeddings, opts)
        return StepOutput(t.logits, t.logits_pre_softcap, acts_out, pre_out)
