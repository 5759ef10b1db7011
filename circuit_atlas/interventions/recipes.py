"""The papers' intervention recipes, for any prompt: find a supernode by a stated rule, take a
replacement from another prompt, align it, then swap, patch or ablate.

    two-hop ("The capital of the state containing Dallas is" -> " Austin")
    region = region_supernodes(model, prompt, "Dallas", " Austin", reference=oakland_prompt)
    region.specific / region.say / region.region        Dallas-specific, say-Austin, the rest (Texas)
    say_capital_supernode(model, region.graph, capitals, exclude=region.specific)
    words_supernode(region.graph, model, prompt, "capital of")
    california = region_replacement(model, oakland_prompt, "Oakland", " Sacramento", onto=prompt)
    model.intervene(prompt, swap({**region.region, **region.say}, california.specific))

    multilingual ("Le contraire de petit est" -> " grand")
    french = language_supernode(model, fr, " grand", " big", same_frame=fr_small, same_word=en_petit)
    chinese = concept_replacement(model, zh, [fr, en], onto=fr, anchors=[(1, 4), (-1, -1)])
    model.intervene(fr, patch(french, chinese))

The rules (all from discovery.py; a feature set is {Feature: clean activation}):

    region specific    features of the prompt's pruned graph from the city's first token to the end that
                       are absent, or below half as active, on `reference` (the same frame, a city of
                       another region), aligned onto the prompt's positions (the two city names
                       right-aligned: filler_spans)
    say <answer>       the specific features whose decoder ranks the answer in its top 10
    region             the other specific features
    say a capital      last-token features of the pruned graph, not region-specific, whose decoder's
                       top 10 holds at least 5 capitals
    language           features favouring this language's answer over another language's (a positive
                       direct effect on the logit difference) that stay on with a foreign word in the
                       same frame and are off with this word in a foreign frame
    concept            a prompt's pruned-graph features absent on every contrast prompt

Multipliers (the papers'): a supernode x-2 (SUPPRESS), a replacement at +2x its own activation
(INJECT): `swap`. Plain patching is x0 and 1x: `patch`. `ablate` scales one supernode. All runs use
frozen attention (MODE), as the papers did.

A rule that finds nothing for a reason it can name (a reference equal to the prompt, identical
tokens to favour between, an empty supernode to ablate or swap) raises EmptyRuleError saying why and
what to change, instead of returning an empty set that would make an intervention a silent no-op.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..graph.graph import Graph
from . import discovery as d
from .discovery import FeatureSet
from .spec import Intervention, scale_by

MODE = "frozen_attention"  # the papers': attention patterns held at the clean prompt's, the rest live
SUPPRESS, INJECT = -2.0, 2.0  # the papers' multipliers: a supernode x-2, a replacement at +2x its activation
PATCH = (0.0, 1.0)  # plain patching: the supernode x0, the replacement at 1x its own activation


class EmptyRuleError(ValueError):
    """A rule found no features, for a reason it can name (the message says which and how to fix it)."""


def require(features: FeatureSet, what: str, fix: str) -> FeatureSet:
    """`features`, or EmptyRuleError("<what> is empty: <fix>")."""
    if not features:
        raise EmptyRuleError(f"{what} is empty: {fix}")
    return features


def _attribute(model, prompt: str) -> Graph:
    from ..attribution.attribute import attribute

    return attribute(model, prompt, progress=False)


# --- positions ------------------------------------------------------------------------------------
def onto(model, source: str, features: FeatureSet, target: str, anchors: Iterable[tuple[int, int]] = (),
         spans: Iterable[tuple[Sequence[int], Sequence[int]]] = ()) -> FeatureSet:  # fmt: skip
    """`features` of prompt `source` moved onto prompt `target`'s positions (discovery.align_positions:
    identical tokens matched, unmatched runs right-aligned; `anchors` fix roles that share no token,
    `spans` are runs aligned from their ends, e.g. filler_spans' city names)."""
    if source == target:
        return dict(features)
    mapping = d.align_positions(model.tokenize(source).tolist(), model.tokenize(target).tolist(), anchors, spans)
    return d.move(features, mapping)


def filler_spans(model, prompt: str, text: str, other: str) -> list[tuple[list[int], list[int]]]:
    """[(the tokens of `text` in `prompt`, the tokens of `other` in their place)] when `other` is
    `prompt`'s frame with another filler ("... containing Dallas is" / "... containing Oak Land is"),
    else []: the spans to right-align, so that a city sharing a token with the other city does not
    have that token matched and the rest of the name pushed off (discovery's module docstring)."""
    span = d.token_span(model, prompt, text)
    there = d.matching_span(model.tokenize(prompt).tolist(), model.tokenize(other).tolist(), span)
    return [] if there is None else [(span, there)]


def _reversed(spans):
    return [(b, a) for a, b in spans]


def _distinct(prompt: str, other: str, role: str) -> None:
    if prompt == other:
        raise EmptyRuleError(
            f"the {role} prompt is the prompt itself ({prompt!r}), so contrasting with it finds nothing; "
            "give a prompt with the same frame and another city, word or language"
        )


# --- two-hop: region, say-<capital>, say-a-capital, words -----------------------------------------
@dataclass
class RegionSupernodes:
    """A two-hop prompt's region-specific features, split into say-<answer> and the region proper."""

    graph: Graph  # the prompt's full attribution graph
    specific: FeatureSet  # city-first-token-to-end features of the pruned graph absent on the reference
    say: FeatureSet  # the specific features whose decoder promotes the answer (may be empty: not a rule failure)
    region: FeatureSet  # specific minus say


def region_supernodes(model, prompt: str, city: str, answer: str, reference: str, graph: Graph | None = None,
                      reference_features: FeatureSet | None = None, pruned: FeatureSet | None = None,
                      ) -> RegionSupernodes:  # fmt: skip
    """The region supernodes of `prompt` (rules in the module docstring).

    reference: the same frame with a city of another region ("... containing Oakland is" for Dallas).
    graph / reference_features / pruned: the prompt's attribution graph, the reference's active
    features (active_features) and graph_features(graph.prune()), when already computed.
    Raises EmptyRuleError when the reference is the prompt or nothing tells the city from it.
    """
    _distinct(prompt, reference, "reference")
    graph = _attribute(model, prompt) if graph is None else graph
    span = range(d.token_span(model, prompt, city)[0], len(graph.tokens))
    ref = reference_features if reference_features is not None else d.active_features(model, reference)
    pruned = d.graph_features(graph.prune()) if pruned is None else pruned
    cities = _reversed(filler_spans(model, prompt, city, reference))  # the reference's city onto this one
    specific = d.contrast(d.select(pruned, positions=span), onto(model, reference, ref, prompt, spans=cities))
    require(specific, f"the {city}-specific set of {prompt!r}", f"the reference {reference!r} shares all its features; "
            "use a city of another region")  # fmt: skip
    say = d.promoting(model, specific, [answer])
    return RegionSupernodes(graph, specific, say, d.without(specific, say))


def region_replacement(model, prompt: str, city: str, answer: str, onto_prompt: str, graph: Graph | None = None,
                       onto_features: FeatureSet | None = None, pruned: FeatureSet | None = None,
                       ) -> RegionSupernodes:  # fmt: skip
    """Another region's supernodes, found on its own `prompt` contrasted with `onto_prompt` (the
    prompt it will be injected into) and moved onto `onto_prompt`'s positions. `graph` / `pruned`:
    `prompt`'s graph and its pruned features; `onto_features`: `onto_prompt`'s active features, when
    already computed."""
    found = region_supernodes(model, prompt, city, answer, onto_prompt, graph, onto_features, pruned)
    cities = filler_spans(model, prompt, city, onto_prompt)
    moved = {
        k: onto(model, prompt, getattr(found, k), onto_prompt, spans=cities) for k in ("specific", "say", "region")
    }
    return RegionSupernodes(found.graph, **moved)


def say_capital_supernode(model, graph: Graph, capitals: Sequence[str], exclude: FeatureSet = (),
                          min_count: int = 5) -> FeatureSet:  # fmt: skip
    """Last-token features of the pruned graph, not in `exclude`, whose decoder's top 10 holds at
    least `min_count` of `capitals` (may be empty on a transcoder set without such features)."""
    pruned = d.graph_features(graph.prune())
    last = d.select(pruned, positions=[len(graph.tokens) - 1])
    return d.promoting(model, d.without(last, dict.fromkeys(exclude, 0.0)), capitals, min_count=min_count)


def words_supernode(graph: Graph, model, prompt: str, text: str) -> FeatureSet:
    """Features of the pruned graph on the tokens of `text` ("capital of")."""
    return d.select(d.graph_features(graph.prune()), positions=d.token_span(model, prompt, text))


# --- multilingual: language and concept supernodes -------------------------------------------------
def language_supernode(model, prompt: str, answer: str, competitor: str, same_frame: str, same_word: str,
                       onto_prompt: str | None = None, anchors: dict[str, Sequence[tuple[int, int]]] | None = None,
                       activations: dict[str, FeatureSet] | None = None) -> FeatureSet:  # fmt: skip
    """The language features of `prompt` (rule in the module docstring).

    answer / competitor: this language's answer and another language's (" grand", " big");
    same_frame: this frame with a foreign word ("Le contraire de small est"); same_word: a foreign frame
    with this word ("The opposite of petit is"). onto_prompt: the prompt whose positions the result
    is on [prompt]; anchors: {prompt: anchor pairs onto onto_prompt} for prompts sharing no tokens
    with it; activations: {prompt: active features on onto_prompt's positions}, when computed.
    """
    onto_prompt = prompt if onto_prompt is None else onto_prompt
    anchors = anchors or {}
    _distinct(prompt, same_frame, "same-frame")
    _distinct(prompt, same_word, "same-word")

    def acts(p: str) -> FeatureSet:
        if activations is not None and p in activations:
            return activations[p]
        return onto(model, p, d.active_features(model, p), onto_prompt, anchors.get(p, ()))

    favour = onto(model, prompt, d.favouring(model, prompt, answer, competitor), onto_prompt, anchors.get(prompt, ()))
    require(favour, f"the features favouring {answer!r} over {competitor!r} on {prompt!r}",
            "no feature has a positive direct effect on that logit difference; check the answer tokens")  # fmt: skip
    found = d.contrast(d.shared(favour, acts(same_frame)), acts(same_word))
    return require(found, f"the language supernode of {prompt!r}", f"every feature favouring {answer!r} either goes off "
                   f"in {same_frame!r} or stays on in {same_word!r}")  # fmt: skip


def concept_replacement(model, prompt: str, contrasts: Sequence[str], onto_prompt: str,
                        anchors: dict[str, Sequence[tuple[int, int]]] | None = None,
                        activations: dict[str, FeatureSet] | None = None, graph: Graph | None = None) -> FeatureSet:  # fmt: skip
    """`prompt`'s own pruned-graph features that are absent on every prompt of `contrasts`, on
    `onto_prompt`'s positions: the "Chinese" of "小的反义词是" against the French and English prompts,
    or the "grand" of "Le contraire de grand est" against "Le contraire de petit est"."""
    anchors = anchors or {}
    for c in contrasts:
        _distinct(prompt, c, "contrast")
    graph = _attribute(model, prompt) if graph is None else graph
    found = onto(model, prompt, d.graph_features(graph.prune()), onto_prompt, anchors.get(prompt, ()))
    for c in contrasts:
        other = activations[c] if activations and c in activations else None
        if other is None:
            other = onto(model, c, d.active_features(model, c), onto_prompt, anchors.get(c, ()))
        found = d.contrast(found, other)
    return require(
        found, f"the concept set of {prompt!r}", f"every feature of its pruned graph is active on {contrasts}"
    )


def concept_supernode(features: FeatureSet, reference: FeatureSet, what: str = "the concept set") -> FeatureSet:
    """`features` (a pruned graph's) absent, or below half as active, on `reference` (another prompt's
    active features on the same positions): "petit" against "Le contraire de grand est"."""
    return require(d.contrast(features, reference), what, "every feature is as active on the reference prompt")


# --- interventions ----------------------------------------------------------------------------------
def swap(original: FeatureSet, new: FeatureSet, down: float = SUPPRESS, up: float = INJECT) -> list[Intervention]:
    """The papers' swap: `original` x`down` (x-2), `new` set to `up` x (+2x) its own activation; a
    feature in both is edited once, to the replacement's value."""
    require(new, "the replacement set", "nothing to inject; find the replacement on a prompt where the rule holds")
    require(original, "the supernode to replace", "nothing to suppress; check the rule that found it")
    return d.swap(original, new, down, up)


def patch(original: FeatureSet, new: FeatureSet) -> list[Intervention]:
    """Plain patching: `original` switched off (x0), `new` at its own activation (1x)."""
    return swap(original, new, *PATCH)


def ablate(features: FeatureSet, factor: float = SUPPRESS, name: str = "supernode") -> list[Intervention]:
    """Scale one supernode: x0 switches it off, x-2 (the papers') inverts it."""
    require(features, f"the {name} to ablate", "nothing would change; check the rule that found it")
    return [scale_by(d.supernode(name, features), factor)]
