"""What the graph explains: logit targets, read at the last position.

Every target is a direction v in the final-norm output space; its value is z[T-1] . v.
- a token t: v = u_t - mean_j u_j (the demeaned unembedding row, pre soft-cap), weighted by
  its probability;
- `LogitDiff(a, b)`: v = u_a - u_b, weighted by |p_a - p_b| (floored at 1e-6);
- `Direction(label, vector, weight)`: any vector, used as given.
With no targets, the most probable tokens are taken until their mass reaches
`desired_logit_prob` (at most `max_n_logits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LogitDiff:
    positive: str | int
    negative: str | int


@dataclass
class Direction:
    label: str
    vector: torch.Tensor  # (d_model,)
    weight: float = 1.0


@dataclass
class Target:
    label: str
    token_id: int  # vocabulary id, or vocab_size + i for a custom direction
    probability: float  # weight used by influence and pruning
    vector: torch.Tensor  # (d,)
    custom: bool = False


def _token_id(model, token: str | int) -> int:
    V = model.vocab_size
    if isinstance(token, int) or (isinstance(token, torch.Tensor) and token.ndim == 0):
        token = int(token)
        if not 0 <= token < V:
            raise ValueError(f"target token id {token} is outside the vocabulary [0, {V})")
        return token
    ids = model.tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = model.tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"target {token!r} is not a single token in this vocabulary (it splits into {pieces}); "
            "give a string that is one token (mind the leading space) or a token id"
        )
    return int(ids[0])


def _label(model, token_id: int) -> str:
    return model.tokenizer.decode([token_id])


def resolve_targets(
    model, logits_pre: torch.Tensor, logits: torch.Tensor, targets, max_n_logits: int, desired_logit_prob: float
) -> list[Target]:
    """Targets for the last position given its pre-/post-soft-cap logits (V,)."""
    W_U = model.weights.W_U.to(model.dtype)  # stored weights may be bf16: directions in the compute dtype
    mean_u = W_U.mean(0)
    probs = torch.softmax(logits.float(), dim=-1)

    def token_target(t: int) -> Target:
        return Target(_label(model, t), t, float(probs[t]), W_U[t] - mean_u)

    if targets is None:
        if max_n_logits < 1:
            raise ValueError("max_n_logits must be at least 1")
        if not 0 < desired_logit_prob <= 1:
            raise ValueError("desired_logit_prob must be in (0, 1]")
        top_p, top_i = probs.topk(min(max_n_logits, probs.shape[0]))
        mass = top_p.cumsum(0)  # (k,) on the logits' device; the query must live there too
        cutoff = int(torch.searchsorted(mass, mass.new_tensor([desired_logit_prob]))[0]) + 1
        return [token_target(int(t)) for t in top_i[:cutoff]]

    if isinstance(targets, (str, int, LogitDiff, Direction, tuple)) or (
        isinstance(targets, torch.Tensor) and targets.ndim == 0
    ):
        targets = [targets]
    if isinstance(targets, torch.Tensor):
        targets = targets.tolist()
    if len(targets) == 0:
        raise ValueError("targets is empty; pass None for the most probable tokens, or some targets")
    out: list[Target] = []
    V = model.vocab_size
    for item in targets:
        if isinstance(item, LogitDiff):
            a, b = _token_id(model, item.positive), _token_id(model, item.negative)
            weight = max(abs(float(probs[a] - probs[b])), 1e-6)
            label = f"{_label(model, a)} - {_label(model, b)}"
            out.append(Target(label, V + len(out), weight, W_U[a] - W_U[b], custom=True))
        elif isinstance(item, Direction) or (isinstance(item, tuple) and len(item) in (2, 3)):
            d = item if isinstance(item, Direction) else Direction(*item)
            vector = torch.as_tensor(d.vector, dtype=W_U.dtype, device=W_U.device)
            if vector.shape != (model.d_model,):
                raise ValueError(
                    f"direction {d.label!r} has shape {tuple(vector.shape)}; it must be a vector of size d_model={model.d_model}"
                )
            out.append(Target(str(d.label), V + len(out), float(d.weight), vector, custom=True))
        else:
            out.append(token_target(_token_id(model, item)))
    return out
