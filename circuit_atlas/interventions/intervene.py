"""`intervene` (one forward pass) and `generate` (token by token, with the KV cache).

Both are also methods of ReplacementModel: `model.intervene(prompt, [...], mode="free")`.

The default mode is "frozen_attention" (DEFAULT_MODE), as in circuit-tracer and the papers'
intervention experiments: the prompt's attention patterns are held, everything else responds.
Every result says which mode ran (`result.mode`, and its printed form), and `result.notes` says
when an intervention could not act (scaling a feature that is not active multiplies zero); a
feature inactive on the clean prompt also raises a warning (a wrong index or position, most
likely), one switched off by the run's other interventions (common when steering a supernode) not.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from ..attribution.context import ZERO_POSITIONS
from ..transcoders.match import recorded_fvu
from .forward import (
    FREE,
    FeatureActivations,
    InterventionRunner,
    Mode,
    as_mode,
    resolve,
)
from .spec import Intervention

DEFAULT_MODE = "frozen_attention"
COLLAPSE_FACTOR = 10.0  # top-1 below 10 x uniform (1/vocab): the output has collapsed


class TokenProbability(NamedTuple):
    token: str  # the decoded token, e.g. ' Austin'
    probability: float
    id: int

    def __repr__(self) -> str:
        return f"{self.token!r} {self.probability:.2f}"


class TokenProbabilities:
    """Next-token probabilities (V,) that know their tokens: `.topk(3)` gives (token, probability, id)."""

    def __init__(self, probs: torch.Tensor, tokenizer):
        self.tensor = probs  # (V,) float64
        self.tokenizer = tokenizer

    def topk(self, k: int) -> list[TokenProbability]:
        top = self.tensor.topk(k)
        return [
            TokenProbability(self.tokenizer.decode([int(i)]), float(p), int(i)) for p, i in zip(top.values, top.indices)
        ]

    def __getitem__(self, token: int | str) -> float:
        """Probability of a token id, or of a token given as its (single-token) text."""
        if isinstance(token, str):
            ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ValueError(f"{token!r} is not one token (it splits into {len(ids)}); give one token or an id")
            token = ids[0]
        return float(self.tensor[int(token)])

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __repr__(self) -> str:
        return f"TokenProbabilities(top 5: {self.topk(min(5, len(self)))})"


@dataclass
class InterventionResult:
    input_ids: torch.Tensor  # (T,)
    logits: torch.Tensor  # (T, V)
    logits_pre_softcap: torch.Tensor  # (T, V)
    activations: FeatureActivations  # intervened features at their targets; none at BOS
    pre_activations: list[torch.Tensor] | None  # L x (T, F_l) when asked for
    mode: str = DEFAULT_MODE  # the mode that ran: free, frozen_attention, constrained or constrained([layers])
    notes: list[str] = field(default_factory=list)  # interventions that could not act, and why
    tokenizer: object = field(default=None, repr=False)

    def probabilities(self, position: int = -1) -> TokenProbabilities:
        """Probabilities at `position`; `.topk(k)` lists (token, probability, id), `.tensor` is the (V,) tensor."""
        return TokenProbabilities(torch.softmax(self.logits[position].double(), -1), self.tokenizer)

    def is_collapsed(self, position: int = -1, factor: float = COLLAPSE_FACTOR) -> bool:
        """Whether the output at `position` has collapsed towards uniform: its top-1 probability is
        below `factor` x 1/vocab (an intervention that pushed activations off their range often ends
        there, and its "top token" then means nothing)."""
        probs = torch.softmax(self.logits[position].double(), -1)
        return bool(probs.max() < factor / probs.shape[0])

    @property
    def collapsed(self) -> bool:
        """is_collapsed() at the last position: the next-token output is near uniform."""
        return self.is_collapsed()

    def __repr__(self) -> str:
        top = self.probabilities().topk(3) if self.tokenizer is not None else "?"
        notes = f", notes={self.notes}" if self.notes else ""
        collapsed = ", collapsed (near uniform)" if self.collapsed else ""
        return f"InterventionResult(mode={self.mode!r}, {self.input_ids.shape[0]} tokens, top {top}{collapsed}{notes})"


def mode_name(mode: Mode) -> str:
    if mode.kind == "constrained" and mode.layers is not None:
        return f"constrained({sorted(mode.layers)})"
    return mode.kind


def _inactive_notes(edits, pre_activations, model, ids: torch.Tensor, clean) -> list[str]:
    """Scale edits on features that are zero at every prompt position they cover: they change nothing.

    The note says whether the feature is inactive on the clean prompt too (a wrong index or position)
    or was switched off by the other interventions of this run.
    """
    tc, notes, T = model.transcoders, [], ids.shape[0]
    for e in edits:
        if e.scale is None or e.scale == 1:
            continue
        positions = [p for p in e.positions(0, T) if p >= ZERO_POSITIONS]
        if not positions or bool((tc.activate(e.layer, pre_activations[e.layer])[positions, e.index] != 0).any()):
            continue
        clean = clean if clean is not None else model.run(ids)  # free mode: one clean forward, only here
        clean_acts = tc.activate(e.layer, tc.encode(e.layer, clean.feature_inputs[e.layer]))[positions, e.index]
        shown = positions if len(positions) <= 4 else f"{positions[0]}..{positions[-1]}"
        why = "is not active" if not bool((clean_acts != 0).any()) else "is switched off by the other interventions"
        notes.append(
            f"feature {e.index} of layer {e.layer} {why} at position(s) {shown}, so scaling it by {e.scale:g} does "
            "nothing; use set_to (--set) to give it an activation"
        )
    return notes


@dataclass
class Generation:
    prompt_ids: torch.Tensor  # (T,)
    new_ids: torch.Tensor  # (n,) generated token ids
    text: str  # the generated continuation only
    logits: torch.Tensor  # (n, V) the logits each new token was drawn from
    activations: FeatureActivations  # over prompt + generated positions (the last token's excluded)
    mode: str = DEFAULT_MODE  # the mode the prompt ran in (generated tokens always run free)


def _without_bos(acts: list[torch.Tensor]) -> FeatureActivations:
    """Report no features at position 0 (BOS), as attribution graphs do; its MLP still runs."""
    out = [a.clone() for a in acts]
    for a in out:
        a[:ZERO_POSITIONS] = 0
    return FeatureActivations(out)


def _checks_fit(model) -> bool:
    """Whether model.run() would check that the transcoders fit (they record their FVU): free mode runs it then."""
    return not getattr(model, "allow_model_mismatch", False) and recorded_fvu(model.transcoders.metadata) is not None


def _ids(model, prompt) -> torch.Tensor:
    if isinstance(prompt, torch.Tensor) and prompt.dtype == torch.long:
        return prompt.to(model.device)
    return model.tokenize(prompt)


@torch.no_grad()
def intervene(
    model,
    prompt: str | list[int] | torch.Tensor,
    interventions: Sequence[Intervention] = (),
    *,
    mode: Mode | str = DEFAULT_MODE,
    return_pre_activations: bool = False,
) -> InterventionResult:
    """Run the prompt with the interventions applied; see interventions/forward.py for the modes.

    mode: "frozen_attention" (default), "free", "constrained" or constrained(layers).
    """
    ids = _ids(model, prompt)
    T = ids.shape[0]
    mode = as_mode(mode, model.n_layers)
    edits = resolve(interventions, model.transcoders, T, T)
    clean = model.run(ids) if mode != FREE or _checks_fit(model) else None  # run() checks the transcoders fit
    out = InterventionRunner(model, edits, mode, clean if mode != FREE else None, T).step(ids)
    notes = _inactive_notes(edits, out.pre_activations, model, ids, clean)
    for note in notes:
        if " is not active " in note:  # likely a wrong index or position; a feature switched off upstream is not
            warnings.warn(note, stacklevel=3)
    return InterventionResult(
        input_ids=ids,
        logits=out.logits,
        logits_pre_softcap=out.logits_pre_softcap,
        activations=_without_bos(out.activations),
        pre_activations=out.pre_activations if return_pre_activations else None,
        mode=mode_name(mode),
        notes=notes,
        tokenizer=model.tokenizer,
    )


def _next_token(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.double() / temperature, -1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


@torch.no_grad()
def generate(
    model,
    prompt: str | list[int] | torch.Tensor,
    interventions: Sequence[Intervention] = (),
    max_new_tokens: int = 20,
    temperature: float = 0.0,
    seed: int | None = None,
    *,
    mode: Mode | str = DEFAULT_MODE,
    stop_at_eos: bool = True,
) -> Generation:
    """Continue the prompt under the interventions (greedy at temperature 0, else sampled with `seed`).

    Positions may point past the prompt (an int up to prompt length + max_new_tokens - 1, an
    open slice such as slice(-1, None), or "all") to steer the generated tokens too.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    ids = _ids(model, prompt)
    T = ids.shape[0]
    limit = model.weights.max_positions
    if limit is not None and T + max_new_tokens - 1 > limit:
        raise ValueError(
            f"the prompt ({T} tokens) plus {max_new_tokens} new tokens exceeds the model's context of {limit}; "
            "ask for fewer tokens"
        )
    mode = as_mode(mode, model.n_layers)
    edits = resolve(interventions, model.transcoders, T, T + max_new_tokens)
    clean = model.run(ids) if mode != FREE or _checks_fit(model) else None  # run() checks the transcoders fit
    runner = InterventionRunner(model, edits, mode, clean if mode != FREE else None, T)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    eos = model.tokenizer.eos_token_id

    out = runner.step(ids)
    acts = [[a] for a in out.activations]
    step_logits, new_ids = [], []
    while True:
        logits = out.logits[-1]
        token = _next_token(logits, temperature, generator)
        step_logits.append(logits)
        new_ids.append(token)
        if len(new_ids) == max_new_tokens or (stop_at_eos and token == eos):
            break
        out = runner.step(torch.tensor([token], device=ids.device))
        for l, a in enumerate(out.activations):
            acts[l].append(a)
    new = torch.tensor(new_ids, dtype=torch.long, device=ids.device)
    return Generation(
        prompt_ids=ids,
        new_ids=new,
        text=model.tokenizer.decode(new_ids),
        logits=torch.stack(step_logits),
        activations=_without_bos([torch.cat(a) for a in acts]),
        mode=mode_name(mode),
    )
