"""interventions.recipes: the examples' rules as a public module.

- a rule that would find nothing for a reason it can name raises (EmptyRuleError / ValueError)
  instead of returning an empty set that makes the intervention a silent no-op;
- on the shipped toy world (CLT) the recipes find the same sets as the rules composed by hand
  from discovery.py (the examples' code before the recipes existed), and reproduce the examples'
  single-instance outcomes: Texas -> California gives Sacramento, French x-2 gives " big";
- InterventionResult.collapsed flags a near-uniform output.
"""

from __future__ import annotations

import functools

import pytest
import torch
from tiny import PROMPT, prompt_ids, tiny_model, tiny_tokenizer, tiny_transcoders

from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.interventions import Feature
from circuit_atlas.interventions import recipes as rc
from circuit_atlas.interventions.discovery import (
    active_features,
    align_positions,
    contrast,
    favouring,
    graph_features,
    move,
    promoting,
    select,
    shared,
    token_span,
    without,
)
from circuit_atlas.interventions.intervene import COLLAPSE_FACTOR

DALLAS, OAKLAND = "The capital of the state containing Dallas is", "The capital of the state containing Oakland is"
FR, EN, ZH = "Le contraire de petit est", "The opposite of small is", "小的反义词是"
FR_SMALL, EN_PETIT = "Le contraire de small est", "The opposite of petit is"


@functools.cache
def toyworld() -> ReplacementModel:
    return ReplacementModel.from_pretrained("toyworld", "toyworld-clt")


def _top(model, prompt, interventions) -> str:
    logits = model.intervene(prompt, interventions, mode=rc.MODE).logits[-1]
    return model.tokenizer.decode([int(logits.argmax())])


# --- empty rules raise -----------------------------------------------------------------------------
def test_favouring_identical_tokens_raises():
    tok = tiny_tokenizer()
    hf = tiny_model("llama", 0, tokenizer=tok)
    tiny = ReplacementModel(hf, tok, tiny_transcoders(hf, "clt", True, "jumprelu", prompt_ids=prompt_ids(tok), seed=3))
    with pytest.raises(ValueError, match="two different tokens"):
        favouring(tiny, PROMPT, "Austin", "Austin")
    assert favouring(tiny, PROMPT, "Austin", "Texas")  # two tokens: the rule runs


def test_rules_with_a_reason_to_be_empty_raise():
    model = toyworld()
    with pytest.raises(rc.EmptyRuleError, match="reference prompt is the prompt itself"):
        rc.region_supernodes(model, DALLAS, "Dallas", " Austin", reference=DALLAS)
    # "long" is English and French: the code-switched same-frame prompt is the prompt itself
    long_fr = "Le contraire de long est"
    with pytest.raises(rc.EmptyRuleError, match="same-frame prompt is the prompt itself"):
        rc.language_supernode(
            model, long_fr, " court", " short", same_frame=long_fr, same_word="The opposite of long is"
        )
    with pytest.raises(rc.EmptyRuleError, match="contrast prompt is the prompt itself"):
        rc.concept_replacement(model, ZH, [ZH], onto_prompt=FR)
    acts = active_features(model, FR)
    with pytest.raises(rc.EmptyRuleError, match="as active on the reference"):
        rc.concept_supernode(acts, acts)
    with pytest.raises(rc.EmptyRuleError, match="the Texas to ablate is empty"):
        rc.ablate({}, -2.0, "Texas")
    some = dict(list(acts.items())[:3])
    with pytest.raises(rc.EmptyRuleError, match="replacement set is empty"):
        rc.swap(some, {})
    with pytest.raises(rc.EmptyRuleError, match="supernode to replace is empty"):
        rc.patch({}, some)


# --- the recipes are the examples' rules ------------------------------------------------------------
def test_region_recipe_equals_the_rule_composed_by_hand():
    model = toyworld()
    graph = attribute(model, DALLAS, progress=False)
    ids = model.tokenize(DALLAS).tolist()
    span = range(token_span(model, DALLAS, "Dallas")[0], len(ids))
    cities = [(token_span(model, OAKLAND, "Oakland"), token_span(model, DALLAS, "Dallas"))]  # right-aligned
    assert rc.filler_spans(model, OAKLAND, "Oakland", DALLAS) == cities
    ref = move(active_features(model, OAKLAND), align_positions(model.tokenize(OAKLAND).tolist(), ids, spans=cities))
    specific = contrast(select(graph_features(graph.prune()), positions=span), ref)
    say = promoting(model, specific, [" Austin"])
    found = rc.region_supernodes(model, DALLAS, "Dallas", " Austin", reference=OAKLAND, graph=graph)
    assert found.specific == specific and found.say == say and found.region == without(specific, say)
    assert found.say and found.region  # on the CLT both parts exist (6 of 24 features say Austin)


def test_language_recipe_equals_the_rule_composed_by_hand():
    model = toyworld()
    by_hand = contrast(shared(favouring(model, FR, " grand", " big"), active_features(model, FR_SMALL)),
                       active_features(model, EN_PETIT))  # fmt: skip
    assert rc.language_supernode(model, FR, " grand", " big", FR_SMALL, EN_PETIT) == by_hand


def test_recipes_reproduce_the_examples_single_instances():
    """Texas (+ say Austin) x-2, California +2x -> Sacramento; French x-2 -> ' big'; French -> Chinese
    by patching -> 大 (examples/README.md's figures)."""
    model = toyworld()
    texas = rc.region_supernodes(model, DALLAS, "Dallas", " Austin", reference=OAKLAND)
    california = rc.region_replacement(model, OAKLAND, "Oakland", " Sacramento", DALLAS)
    assert _top(model, DALLAS, rc.swap({**texas.region, **texas.say}, california.specific)) == " Sacramento"
    assert _top(model, DALLAS, rc.ablate(texas.region, rc.SUPPRESS)) != " Austin"
    french = rc.language_supernode(model, FR, " grand", " big", FR_SMALL, EN_PETIT)
    assert _top(model, FR, rc.ablate(french, rc.SUPPRESS, "French")) == " big"
    assert _top(model, FR, rc.ablate(french, 0.0, "French")) == " grand"
    chinese = rc.concept_replacement(model, ZH, [FR, EN], FR, anchors={ZH: [(1, 4), (-1, -1)]})
    assert _top(model, FR, rc.patch(french, chinese)) == "大"


# --- the collapse flag ----------------------------------------------------------------------------------
def test_collapsed_flags_a_near_uniform_output():
    model = toyworld()
    clean = model.intervene(DALLAS, [])
    assert not clean.collapsed and "collapsed" not in repr(clean)
    vocab = clean.logits.shape[-1]
    flat = torch.zeros_like(clean.logits)
    flat[-1, 0] = 1.0  # top-1 e/(e + V - 1): about 1.5 x uniform
    clean.logits = flat
    assert clean.collapsed and "collapsed (near uniform)" in repr(clean)
    # just above the threshold is not collapsed: top-1 at 2 x COLLAPSE_FACTOR / V
    peak = torch.zeros(vocab, dtype=torch.float64)
    target = 2 * COLLAPSE_FACTOR / vocab
    peak[0] = float(torch.log(torch.tensor(target * (vocab - 1) / (1 - target))))
    clean.logits = peak.unsqueeze(0).float()
    assert not clean.collapsed and clean.is_collapsed(factor=3 * COLLAPSE_FACTOR)


def test_onto_same_prompt_is_identity_and_other_prompt_moves():
    model = toyworld()
    f = Feature(1, 9, 3)  # " is" of the Dallas prompt (position 9 of 10 with BOS)
    assert rc.onto(model, DALLAS, {f: 1.0}, DALLAS) == {f: 1.0}
    n_dallas, n_fr = len(model.tokenize(DALLAS)), len(model.tokenize(FR))
    last = Feature(1, n_dallas - 1, 3)
    assert rc.onto(model, DALLAS, {last: 2.0}, FR) == {Feature(1, n_fr - 1, 3): 2.0}
