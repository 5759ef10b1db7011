"""`intervene` (one forward pass) and `generate` (token by token, with the KV cache).

Both are also methods of ReplacementModel: `model.intervene(prompt, [...], mode="free")`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..attribution.context import ZERO_POSITIONS
from .forward import (
    FREE,
    FeatureActivations,
    InterventionRunner,
    Mode,
    as_mode,
    resolve,
)
from .spec import Intervention


@dataclass
class InterventionResult:
    input_ids: torch.Tensor  # (T,)
    logits: torch.Tensor  # (T, V)
    logits_pre_softcap: torch.Tensor  # (T, V)
    activations: FeatureActivations  # intervened features at their targets; none at BOS
    pre_activations: list[torch.Tensor] | None  # L x (T, F_l) when asked for

    def probabilities(self, position: int = -1) -> torch.Tensor:
        return torch.softmax(self.logits[position].double(), -1)


@dataclass
class Generation:
    prompt_ids: torch.Tensor  # (T,)
    new_ids: torch.Tensor  # (n,) generated token ids
    text: str  # the generated continuation only
    logits: torch.Tensor  # (n, V) the logits each new token was drawn from
    activations: FeatureActivations  # over prompt + generated positions (the last token's excluded)


def _without_bos(acts: list[torch.Tensor]) -> FeatureActivations:
    """Report no features at position 0 (BOS), as attribution graphs do; its MLP still runs."""
    out = [a.clone() for a in acts]
    for a in out:
        a[:ZERO_POSITIONS] = 0
    return FeatureActivations(out)


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
    mode: Mode | str = "free",
    return_pre_activations: bool = False,
) -> InterventionResult:
    """Run the prompt with the interventions applied; see interventions/forward.py for the modes."""
    ids = _ids(model, prompt)
    T = ids.shape[0]
    mode = as_mode(mode, model.n_layers)
    edits = resolve(interventions, model.transcoders, T, T)
    clean = model.run(ids) if mode != FREE else None
    out = InterventionRunner(model, edits, mode, clean, T).step(ids)
    return InterventionResult(
        input_ids=ids,
        logits=out.logits,
        logits_pre_softcap=out.logits_pre_softcap,
        activations=_without_bos(out.activations),
        pre_activations=out.pre_activations if return_pre_activations else None,
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
    mode: Mode | str = "free",
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
    clean = model.run(ids) if mode != FREE else None
    runner = InterventionRunner(model, edits, mode, clean, T)
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
    new = torch.tensor(new_ids, dtype=torch.long)
    return Generation(
        prompt_ids=ids,
        new_ids=new,
        text=model.tokenizer.decode(new_ids),
        logits=torch.stack(step_logits),
        activations=_without_bos([torch.cat(a) for a in acts]),
    )
