"""Finding supernodes: groups of features that play one role in a circuit.

A feature set is a dict {Feature: clean activation}. Sets come from a prompt or a graph and are
narrowed by a few composable rules:

    features of a prompt    active_features(model, prompt), graph_features(graph.prune())
    where                   select(features, layers=..., positions=...), token_span(model, prompt, "Dallas")
    what differs            contrast(a, b): active in a, absent or much weaker in b (same positions)
    what is common          shared(a, b, ...): active in a and, about as strongly, in every other
    what it says            promoting(model, features, [" Austin"]): its decoder, read through the
                            unembedding, ranks one of the tokens in its top k

    dallas = graph_features(attribute(model, dallas_prompt).prune())
    specific = contrast(select(dallas, positions=span), active_features(model, oakland_prompt))
    say_austin = promoting(model, specific, [" Austin"])

To carry features from one prompt onto another's positions (a "California" supernode found on the
Oakland prompt, injected into the Dallas prompt), `align_positions` maps positions and `move`
re-places the features; `inject` turns a set into interventions (set each to k x its activation).

Alignment rule (align_positions): anchor pairs you give are fixed first; between anchors, runs of
identical tokens are matched (difflib); a run of unmatched tokens is aligned from its end, so the
last token of a multi-token word lands on the last token of the word it replaces ("hai" of
Shanghai on "as" of Dallas), and the extra leading tokens of a longer source run are squeezed onto
the first position of the target run. Use anchors to align roles that share no tokens, e.g. the
operand of "小的反义词是" (position 1) with that of "The opposite of small is" (position 4).
Spans you give (a source run and a target run, e.g. the two prompts' city names) are aligned from
their ends whatever tokens they hold, and no token inside them is matched to another: without them,
a city that shares a token with the other city ("Dal Las" / "Tor Las Ver", or the pieces " D" "all"
"as" / " Kans" "as") has that token matched and its other tokens pushed off the span or dropped.
`matching_span` finds the other prompt's run for a span from the tokens around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from difflib import SequenceMatcher
from itertools import pairwise

import torch

from ..features.describe import decoder_logits
from ..graph.graph import FEATURE, Graph
from .spec import Feature, Intervention, Supernode, scale_by, set_to

FeatureSet = dict[Feature, float]


# --- where feature sets come from ---------------------------------------------------------------
def active_features(model, prompt) -> FeatureSet:
    """Every active transcoder feature of a prompt, with its clean activation."""
    return dict(model.activations(prompt).active())


def graph_features(graph: Graph) -> FeatureSet:
    """The feature nodes of a graph (usually a pruned one: the features that matter for its logits)."""
    is_feature = graph.kind == FEATURE
    cols = (
        graph.layer[is_feature],
        graph.position[is_feature],
        graph.feature[is_feature],
        graph.activation[is_feature],
    )
    return {Feature(int(l), int(p), int(f)): float(a) for l, p, f, a in zip(*(c.tolist() for c in cols))}


# --- narrowing ------------------------------------------------------------------------------------
def select(features: FeatureSet, *, layers: Iterable[int] | None = None,
           positions: Iterable[int] | None = None) -> FeatureSet:  # fmt: skip
    """The features in the given layers and at the given (absolute) positions."""
    layers = None if layers is None else set(layers)
    positions = None if positions is None else set(positions)
    return {f: a for f, a in features.items()
            if (layers is None or f.layer in layers) and (positions is None or f.position in positions)}  # fmt: skip


def contrast(a: FeatureSet, b: FeatureSet, ratio: float = 0.5) -> FeatureSet:
    """Features of `a` that are inactive in `b`, or active there below `ratio` x their activation in `a`.

    Both sets must use the same positions (`move` one first if the prompts differ). Pass all of the
    other prompt's activations as `b` (active_features), not a pruned graph's: a feature left out of
    a pruned graph may still be active.
    """
    return {f: v for f, v in a.items() if b.get(f, 0.0) < ratio * v}


def shared(a: FeatureSet, *others: FeatureSet, ratio: float = 0.5) -> FeatureSet:
    """Features of `a` active in every other set at no less than `ratio` x their activation in `a`."""
    return {f: v for f, v in a.items() if all(o.get(f, 0.0) >= ratio * v for o in others)}


def token_ids(model, tokens: Iterable[str | int]) -> list[int]:
    """Token ids of strings that must each be one token (ids pass through)."""
    out = []
    for t in tokens:
        if isinstance(t, int):
            out.append(t)
            continue
        ids = model.tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [model.tokenizer.decode([i]) for i in ids]
            raise ValueError(f"{t!r} is not one token (it splits into {pieces}); pass single tokens or ids")
        out.append(int(ids[0]))
    return out


def promoting(model, features: FeatureSet, tokens: Iterable[str | int], k: int = 10, min_count: int = 1) -> FeatureSet:
    """Features whose decoder, read through the unembedding (features/describe.py), puts at least
    `min_count` of `tokens` among the k tokens it promotes most.

    promoting(model, fs, [" Austin"]) finds "say Austin"; promoting(model, fs, capitals, min_count=5)
    finds features whose top 10 is mostly capitals ("say a capital").
    """
    if not 1 <= min_count <= k:
        raise ValueError(f"min_count must be between 1 and k={k}, got {min_count}")
    wanted = set(token_ids(model, tokens))
    hits: dict[tuple[int, int], int] = {}  # a feature's decoder is the same at every position
    out = {}
    for f, v in features.items():
        key = (f.layer, f.index)
        if key not in hits:
            hits[key] = len(set(decoder_logits(model, f.layer, f.index).topk(k).indices.tolist()) & wanted)
        if hits[key] >= min_count:
            out[f] = v
    return out


def link_weight(graph: Graph, sources, targets) -> float:
    """Summed direct effect adjacency[target, source] of one group of graph nodes on another.

    A group is a Supernode, a feature set, or a list of node ids ("feat:2:10:432", "emb:7").
    Nodes the graph does not hold (pruned away, or inactive) count as zero.
    """

    def indices(group) -> list[int]:
        if isinstance(group, Supernode):
            group = group.all_features()
        ids = [Feature(*g).id if isinstance(g, tuple) else g for g in group]
        where = {node: i for i, node in enumerate(graph.ids)}
        return [where[i] for i in ids if i in where]

    src, tgt = indices(sources), indices(targets)
    if not src or not tgt:
        return 0.0
    # Σ over stored edges of weight x (times target listed) x (times source listed): the sum of
    # adjacency[tgt][:, src] without the dense N x N matrix
    t_count = torch.bincount(torch.tensor(tgt), minlength=graph.n_nodes).double()
    s_count = torch.bincount(torch.tensor(src), minlength=graph.n_nodes).double()
    targets_of_edges = graph.row_nodes.long()[graph.csr.row_ids().long()]
    weight = graph.edge_values.double() * t_count[targets_of_edges] * s_count[graph.edge_sources.long()]
    return float(weight.sum())


def without(a: FeatureSet, *others: FeatureSet) -> FeatureSet:
    """The features of `a` that are in none of `others` (set difference; activations from `a`)."""
    return {f: v for f, v in a.items() if not any(f in o for o in others)}


# --- positions: spans and alignment between prompts ----------------------------------------------
def token_span(model, prompt: str, text: str) -> list[int]:
    """Positions (as in model.tokenize(prompt), BOS included) of the tokens covering the first
    occurrence of `text` in `prompt`: token_span(model, "... containing Dallas is", "Dallas")."""
    start = prompt.find(text)
    if start < 0:
        raise ValueError(f"{text!r} does not occur in the prompt {prompt!r}")
    end = start + len(text)
    enc = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    shift = len(model.tokenize(prompt)) - len(enc["input_ids"])  # 1 when a BOS was prepended
    span = [i + shift for i, (s, e) in enumerate(enc["offset_mapping"]) if s < end and e > start]
    if not span:
        raise ValueError(f"no token of {prompt!r} covers {text!r}")
    return span


def _absolute(position: int, n: int) -> int:
    p = position + n if position < 0 else position
    if not 0 <= p < n:
        raise ValueError(f"position {position} is outside a {n}-token prompt")
    return p


def _fill_gap(mapping: dict[int, int], src: range, tgt: range) -> None:
    """Align an unmatched run from its end; extra source tokens land on the run's first target."""
    if len(tgt) == 0:
        return
    for k, s in enumerate(reversed(src)):
        mapping[s] = tgt[max(len(tgt) - 1 - k, 0)]


def matching_span(source: Sequence, target: Sequence, span: Sequence[int]) -> list[int] | None:
    """The positions of `target` that hold what positions `span` hold in `source`: the run of
    `target` between the last occurrence of the token before `span` and the same tokens that follow
    `span` ("... containing Dallas is" / "... country containing Oak Land is": the city names).
    None when `target` does not end with those tokens, lacks the token before, or leaves no room."""
    span = sorted(span)
    if not span:
        return None
    after = len(source) - 1 - span[-1]
    stop = len(target) - after  # the run ends before the shared tail
    if stop <= 0 or list(source[len(source) - after :]) != list(target[stop:]):
        return None
    start = 0
    if span[0] > 0:
        before = [j for j in range(stop) if target[j] == source[span[0] - 1]]
        if not before:
            return None
        start = before[-1] + 1
    return list(range(start, stop)) if start < stop else None


def _span_anchors(spans, S: int, T: int) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """Right-aligned anchor pairs for each (source run, target run), and the extra leading source
    positions of a longer source run, squeezed onto the target run's first position."""
    pairs, squeezed = [], {}
    for src, tgt in spans:
        src, tgt = sorted(_absolute(p, S) for p in src), sorted(_absolute(p, T) for p in tgt)
        if not src or not tgt:
            raise ValueError(f"a span pair needs positions on both sides, got {src} and {tgt}")
        k = min(len(src), len(tgt))
        pairs += list(zip(src[len(src) - k :], tgt[len(tgt) - k :]))
        squeezed.update(dict.fromkeys(src[: len(src) - k], tgt[0]))
    return pairs, squeezed


def align_positions(source: Sequence[str], target: Sequence[str], anchors: Iterable[tuple[int, int]] = (),
                    spans: Iterable[tuple[Sequence[int], Sequence[int]]] = ()) -> dict[int, int]:  # fmt: skip
    """Map source positions to target positions (see the module docstring for the rule).

    source, target: the two prompts' tokens, BOS included: ids (model.tokenize(p).tolist()) or strings
        (graph.tokens); ids are safer, since undecodable byte pieces all print as the same string.
    anchors: (source position, target position) pairs that must align; negative counts from the end.
    spans: (source positions, target positions) pairs of runs aligned from their ends (the city
        names of two prompts); they become anchors, so they must not cross each other or `anchors`.
    Returns {source position: target position}; source positions with nowhere to go are left out.
    """
    S, T = len(source), len(target)
    span_pairs, squeezed = _span_anchors(spans, S, T)
    pairs = sorted({(_absolute(s, S), _absolute(t, T)) for s, t in [*anchors, *span_pairs]})
    for (s0, t0), (s1, t1) in pairwise(pairs):
        if not (s0 < s1 and t0 < t1):
            raise ValueError(f"anchors {pairs} cross or repeat; they must increase in both prompts")
    mapping: dict[int, int] = {}
    bounds = [(-1, -1)] + pairs + [(S, T)]
    for (s0, t0), (s1, t1) in pairwise(bounds):
        if s1 < S:
            mapping[s1] = t1
        src, tgt = list(source[s0 + 1 : s1]), list(target[t0 + 1 : t1])
        ps = pt = 0
        for a, b, n in SequenceMatcher(None, src, tgt, autojunk=False).get_matching_blocks():
            _fill_gap(mapping, range(s0 + 1 + ps, s0 + 1 + a), range(t0 + 1 + pt, t0 + 1 + b))
            for i in range(n):
                mapping[s0 + 1 + a + i] = t0 + 1 + b + i
            ps, pt = a + n, b + n
    mapping.update(squeezed)
    return mapping


def move(features: FeatureSet, mapping: dict[int, int]) -> FeatureSet:
    """Re-place features at mapped positions; unmapped ones are dropped, and a feature that lands
    twice on one position (a squeezed run) keeps its larger activation."""
    out: FeatureSet = {}
    for f, v in features.items():
        if f.position in mapping:
            g = Feature(f.layer, mapping[f.position], f.index)
            out[g] = max(out.get(g, v), v)
    return out


# --- supernodes and interventions -----------------------------------------------------------------
def supernode(name: str, features: FeatureSet, children: Sequence[Supernode] = ()) -> Supernode:
    """A Supernode of these features (in layer, position, index order)."""
    return Supernode(name, sorted(features), list(children))


def inject(features: FeatureSet, factor: float = 2.0) -> list[Intervention]:
    """Set every feature to `factor` x its activation in the set (the papers inject a replacement
    concept at +2x the activation it had on its own prompt)."""
    return [set_to(f, factor * v) for f, v in sorted(features.items())]


def swap(original: FeatureSet, new: FeatureSet, down: float = -2.0, up: float = 2.0) -> list[Intervention]:
    """Replace one concept by another: `original` scaled by `down`, `new` set to `up` x its own
    activation. A feature in both sets is edited once, to the replacement's value."""
    keep = {f: v for f, v in original.items() if f not in new}
    return ([scale_by(supernode("original", keep), down)] if keep else []) + inject(new, up)


def favouring(model, prompt: str, good: str | int, bad: str | int) -> FeatureSet:
    """Features of `prompt` whose direct effect favours token `good` over `bad` (a positive edge to
    the LogitDiff(good, bad) target of the prompt's full graph), with their activations.

    `good` and `bad` must be different tokens: a logit difference with itself is zero, so no
    feature could favour it (ValueError, rather than an empty set)."""
    g, b = token_ids(model, [good, bad])
    if g == b:
        raise ValueError(
            f"favouring needs two different tokens; {good!r} and {bad!r} are both token {g}, so their logit "
            "difference is zero and no feature can favour one over the other"
        )
    from ..attribution.attribute import attribute
    from ..attribution.targets import LogitDiff
    from ..graph.graph import LOGIT

    graph = attribute(model, prompt, targets=[LogitDiff(good, bad)], progress=False)
    row = graph.dense_rows([graph.row_of(int((graph.kind == LOGIT).nonzero()[0, 0]))])[0]  # (n_sources,)
    index = {node: i for i, node in enumerate(graph.ids)}
    return {f: v for f, v in graph_features(graph).items() if row[index[f.id]] > 0}
