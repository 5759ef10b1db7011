"""The papers' intervention experiments on the shipped toy world, and the discovery rules they use.

- discovery.py on its own: set rules on hand-made sets, position alignment, and on a tiny random
  model token spans, decoder promotion, graph features and edge sums;
- examples/two_hop.py and examples/multilingual.py: the supernodes they find on the shipped toy
  world (CLT) and the outcomes the toy world shows, the two the issue requires among them:
  Texas -> California gives Sacramento, and French off gives an English answer.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch
from tiny import PROMPT, prompt_ids, tiny_model, tiny_tokenizer, tiny_transcoders

from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.features.describe import decoder_logits
from circuit_atlas.graph.graph import FEATURE
from circuit_atlas.interventions import Feature, Supernode, scale_by
from circuit_atlas.interventions.discovery import (
    align_positions,
    contrast,
    favouring,
    graph_features,
    inject,
    link_weight,
    matching_span,
    move,
    promoting,
    select,
    shared,
    supernode,
    swap,
    token_span,
    without,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
A, B, C, D = Feature(0, 1, 5), Feature(1, 2, 7), Feature(2, 2, 3), Feature(2, 3, 3)


# --- set rules ---------------------------------------------------------------------------------
def test_contrast_shared_select_without():
    a = {A: 2.0, B: 1.0, C: 4.0}
    b = {A: 1.5, B: 0.4, D: 9.0}  # A about as active, B below half, C absent
    assert contrast(a, b) == {B: 1.0, C: 4.0}
    assert shared(a, b) == {A: 2.0}
    assert contrast(a, b, ratio=0.7) == {B: 1.0, C: 4.0}
    assert contrast(a, b, ratio=0.76) == {A: 2.0, B: 1.0, C: 4.0}  # 1.5 < 0.76 * 2
    assert shared(a, b, {A: 5.0}) == {A: 2.0} and shared(a, b, {}) == {}
    assert select(a, layers=[1, 2]) == {B: 1.0, C: 4.0} and select(a, positions=[1]) == {A: 2.0}
    assert select(a, layers=[2], positions=[1]) == {}
    assert without(a, {B: 0.0}, {C: 1.0}) == {A: 2.0}


def test_supernode_and_inject():
    node = supernode("x", {C: 4.0, A: 2.0})
    assert node.features == [A, C] and node.name == "x"
    ivs = inject({C: 4.0, A: 2.0}, 2.0)
    assert [(iv.subject, iv.value) for iv in ivs] == [(A, 4.0), (C, 8.0)]


# --- alignment -----------------------------------------------------------------------------------
DALLAS = ["<bos>", "The", " capital", " of", " the", " state", " containing", " D", "all", "as", " is"]
SHANGHAI = ["<bos>", "The", " capital", " of", " the", " country", " containing", " S", "h", "ang", "hai", " is"]


def test_align_identical_and_same_length():
    assert align_positions(DALLAS, DALLAS) == {i: i for i in range(len(DALLAS))}
    oakland = DALLAS[:7] + [" O", "ak", "land", " is"]
    assert align_positions(oakland, DALLAS) == {i: i for i in range(len(DALLAS))}


def test_align_right_aligns_unmatched_runs_and_squeezes_longer_ones():
    m = align_positions(SHANGHAI, DALLAS)
    assert all(m[i] == i for i in range(7)) and m[11] == 10  # matched tokens; " country" -> " state"
    assert (m[10], m[9], m[8], m[7]) == (9, 8, 7, 7)  # hai->as, ang->all, h->D, S squeezed onto D
    back = align_positions(DALLAS, SHANGHAI)
    assert (back[9], back[8], back[7], back[10]) == (10, 9, 8, 11)  # the target's extra "S" gets nothing
    assert 7 not in back.values()


def test_align_anchors_roles_and_drops_where_nothing_is_left():
    zh, en = ["<bos>", "小", "的", "反", "义", "词", "是"], ["<bos>", "The", " opposite", " of", " small", " is"]
    m = align_positions(zh, en, anchors=[(1, 4), (-1, -1)])
    assert m[0] == 0 and m[1] == 4 and m[6] == 5
    assert 2 not in m and 5 not in m  # between operand and last token the English prompt has no room
    unanchored = align_positions(zh, en)
    assert unanchored[1] == 1 and unanchored[6] == 5  # right-aligned: 小 squeezed onto "The"
    with pytest.raises(ValueError, match="cross"):
        align_positions(zh, en, anchors=[(1, 4), (3, 2)])
    with pytest.raises(ValueError, match="outside"):
        align_positions(zh, en, anchors=[(9, 1)])


def test_align_spans_right_aligns_cities_that_share_a_token():
    """The syllable world's cities share syllables: "Tor Las Ver" onto "Dal Las". Matching the shared
    " Las" (the old rule) drops " Ver", the donor's last city token, where the region state sits;
    with the two city spans given, the names are aligned from their ends."""
    dal_las = DALLAS[:7] + [" Dal", " Las", " is"]
    tor_las_ver = DALLAS[:7] + [" Tor", " Las", " Ver", " is"]
    old = align_positions(tor_las_ver, dal_las)
    assert old[8] == 8 and 9 not in old  # " Las" matched, " Ver" dropped
    span = matching_span(tor_las_ver, dal_las, [7, 8, 9])
    assert span == [7, 8]
    m = align_positions(tor_las_ver, dal_las, spans=[([7, 8, 9], span)])
    assert (m[9], m[8], m[7]) == (8, 7, 7)  # last on last; the extra leading " Tor" squeezed onto " Dal"
    assert all(m[i] == i for i in range(7)) and m[10] == 9  # the frame still matched token by token
    las_dal = DALLAS[:7] + [" Las", " Dal", " is"]  # same bag, other order: every token shared, none in place
    assert align_positions(las_dal, dal_las, spans=[([7, 8], [7, 8])]) == {i: i for i in range(10)}
    assert align_positions(las_dal, dal_las).get(8) != 8  # the old rule matches " Las" and drops " Dal"
    back = align_positions(dal_las, tor_las_ver, spans=[([7, 8], [7, 8, 9])])
    assert (back[7], back[8]) == (8, 9) and 7 not in back.values()  # the target's extra " Tor" gets nothing


def test_matching_span_reads_the_tokens_around_the_span():
    assert matching_span(DALLAS, SHANGHAI, [7, 8, 9]) == [7, 8, 9, 10]  # " state" / " country" may differ
    oakland = DALLAS[:7] + [" O", "ak", "land", " is"]
    assert matching_span(DALLAS, oakland, [7, 8, 9]) == [7, 8, 9]
    assert matching_span(DALLAS, DALLAS[:7] + [" is"], [7, 8, 9]) is None  # no room for a filler
    assert matching_span(DALLAS, oakland[:-1] + [" was"], [7, 8, 9]) is None  # another tail
    assert matching_span(DALLAS, ["<bos>", " O", "ak", " is"], [7, 8, 9]) is None  # no " containing"
    assert matching_span(DALLAS, DALLAS, [1, 2]) == [1, 2]  # the same prompt: the same span
    with pytest.raises(ValueError, match="cross"):
        align_positions(DALLAS, oakland, anchors=[(9, 7)], spans=[([7, 8, 9], [7, 8, 9])])


def test_move_drops_unmapped_and_keeps_the_larger_of_a_collision():
    f1, f2, f3 = Feature(0, 7, 1), Feature(0, 8, 1), Feature(1, 9, 2)
    moved = move({f1: 1.0, f2: 3.0, f3: 2.0}, {7: 7, 8: 7})
    assert moved == {Feature(0, 7, 1): 3.0}


# --- on a tiny random model ------------------------------------------------------------------------
@functools.cache
def tiny() -> ReplacementModel:
    tok = tiny_tokenizer()
    hf = tiny_model("llama", 0, tokenizer=tok)
    tc = tiny_transcoders(hf, "clt", True, "jumprelu", prompt_ids=prompt_ids(tok), seed=3)
    return ReplacementModel(hf, tok, tc, dtype=torch.float64)


def test_token_span_counts_the_bos():
    model = tiny()
    ids = model.tokenize(PROMPT).tolist()
    (dallas,) = token_span(model, PROMPT, "Dallas")
    assert model.tokenizer.decode([ids[dallas]]) == "Dallas" and dallas == len(ids) - 2
    assert token_span(model, PROMPT, "capital of") == [2, 3]
    with pytest.raises(ValueError, match="does not occur"):
        token_span(model, PROMPT, "Paris")


def test_swap_edits_each_feature_once():
    original, new = {A: 2.0, B: 1.0}, {B: 3.0, C: 4.0}
    ivs = swap(original, new, -2.0, 2.0)
    assert ivs[0].scale == -2.0 and ivs[0].subject.features == [A]  # B is in both: edited once, as new
    assert [(iv.subject, iv.value) for iv in ivs[1:]] == [(B, 6.0), (C, 8.0)]
    assert swap({A: 1.0}, {A: 2.0}) == inject({A: 2.0}, 2.0)


def test_favouring_features_carry_the_logit_difference():
    """Fully constrained (the graph's linear model), switching the favouring features off lowers
    logit(good) - logit(bad) by exactly the sum of their direct effects."""
    from circuit_atlas import LogitDiff
    from circuit_atlas.graph.graph import LOGIT

    model = tiny()
    good, bad = "Austin", "Texas"
    feats = favouring(model, PROMPT, good, bad)
    graph = attribute(model, PROMPT, targets=[LogitDiff(good, bad)], progress=False)
    row = graph.adjacency[int((graph.kind == LOGIT).nonzero()[0, 0])].double()
    index = {node: i for i, node in enumerate(graph.ids)}
    assert feats and all(row[index[f.id]] > 0 for f in feats)
    assert len(feats) < len(graph_features(graph))
    g, b = (model.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (good, bad))

    def diff(ivs):
        lp = model.intervene(PROMPT, ivs, mode="constrained").logits_pre_softcap[-1]
        return float(lp[g] - lp[b])

    expected = sum(float(row[index[f.id]]) for f in feats)
    assert diff([]) - diff([scale_by(supernode("f", feats), 0.0)]) == pytest.approx(expected, rel=1e-4)


def test_promoting_reads_the_decoder_top_k():
    model = tiny()
    f = Feature(1, 4, 3)
    top = decoder_logits(model, 1, 3).topk(10).indices.tolist()
    first, tenth, outside = top[0], top[9], decoder_logits(model, 1, 3).argmin().item()
    assert promoting(model, {f: 1.0}, [first]) == {f: 1.0}
    assert promoting(model, {f: 1.0}, [tenth]) == {f: 1.0} and promoting(model, {f: 1.0}, [tenth], k=5) == {}
    assert promoting(model, {f: 1.0}, [outside]) == {}
    assert promoting(model, {f: 1.0}, top[:3] + [outside], min_count=3) == {f: 1.0}
    assert promoting(model, {f: 1.0}, top[:3] + [outside], min_count=4) == {}
    word = model.tokenizer.decode([first])
    assert promoting(model, {f: 1.0}, [word]) == {f: 1.0}  # token strings work too
    with pytest.raises(ValueError, match="not one token"):
        promoting(model, {f: 1.0}, ["Dallas Texas"])
    with pytest.raises(ValueError, match="min_count"):
        promoting(model, {f: 1.0}, [first], min_count=0)


def test_graph_features_and_link_weight_read_the_graph():
    model = tiny()
    graph = attribute(model, PROMPT, progress=False)
    feats = graph_features(graph)
    acts = dict(model.activations(PROMPT).active())
    assert len(feats) == graph.count("feature") and set(feats) == set(acts)
    assert all(abs(feats[f] - acts[f]) < 1e-4 for f in feats)
    adj, ids = graph.adjacency, graph.ids
    src = sorted(feats)[:3]
    tgt = [f for f in sorted(feats) if f.layer == 2][:4]
    expected = sum(float(adj[ids.index(t.id), ids.index(s.id)]) for s in src for t in tgt)
    assert link_weight(graph, {f: 0.0 for f in src}, Supernode("t", tgt)) == pytest.approx(expected, rel=1e-5)
    assert link_weight(graph, ["emb:1"], ["logit:0"]) == pytest.approx(
        float(adj[ids.index("logit:0"), ids.index("emb:1")])
    )
    assert link_weight(graph, ["feat:0:0:999"], tgt) == 0.0  # not in the graph
    pruned = graph.prune()
    assert set(graph_features(pruned)) <= set(feats)
    assert len(graph_features(pruned)) == int((pruned.kind == FEATURE).sum())


# --- the shipped toy world ----------------------------------------------------------------------------
def _example(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return __import__(name)


@functools.cache
def toyworld() -> ReplacementModel:
    return ReplacementModel.from_pretrained("toyworld", "toyworld-clt")


@functools.cache
def two_hop_found():
    return _example("two_hop").find_supernodes(toyworld())


def _top(model, prompt, interventions, mode="frozen_attention") -> tuple[str, torch.Tensor]:
    logits = model.intervene(prompt, interventions, mode=mode).logits[-1]
    return model.tokenizer.decode([int(logits.argmax())]), torch.softmax(logits.double(), -1)


def test_two_hop_supernodes_are_found():
    sets = two_hop_found()["sets"]
    assert all(sets[k] for k in ("Texas", "say a capital", "say Austin", "capital"))
    model, th = toyworld(), _example("two_hop")
    austin = model.tokenizer(" Austin", add_special_tokens=False)["input_ids"][0]
    for f in sets["say Austin"]:
        assert austin in decoder_logits(model, f.layer, f.index).topk(10).indices.tolist()
    last = len(model.tokenize(th.PROMPT)) - 1
    assert {f.position for f in sets["say a capital"]} == {last}


def _region_swap(model, th, region: str):
    """The example's whole-region swap: Texas + say Austin x-2, the region's features +2x."""
    sets = two_hop_found()["sets"]
    moved, _ = th.replacement(model, region)
    return swap({**sets["Texas"], **sets["say Austin"]}, moved, -2.0, 2.0)


def test_texas_to_california_makes_sacramento_top():
    """The issue's first required outcome: Texas (with say Austin) x-2, California +2x -> Sacramento."""
    model, th = toyworld(), _example("two_hop")
    top, probs = _top(model, th.PROMPT, _region_swap(model, th, "California"))
    assert top == " Sacramento"
    assert probs.max() < 0.5  # the swap wins, but weakly (about 22%): say so rather than hide it


@pytest.mark.parametrize("region, capital", [("China", " Beijing"), ("British Columbia", " Victoria")])
def test_texas_to_other_regions(region, capital):
    model, th = toyworld(), _example("two_hop")
    assert _top(model, th.PROMPT, _region_swap(model, th, region))[0] == capital


def test_two_hop_ablations():
    model, th = toyworld(), _example("two_hop")
    sets = two_hop_found()["sets"]
    capitals = set(th.CAPITALS)
    # say a capital x-2: the model names the state instead, as in the paper
    assert _top(model, th.PROMPT, [scale_by(supernode("s", sets["say a capital"]), -2.0)])[0] == " Texas"
    # Texas x-2: another capital takes over, Austin falls below 10%
    top, probs = _top(model, th.PROMPT, [scale_by(supernode("t", sets["Texas"]), -2.0)])
    austin = model.tokenizer(" Austin", add_special_tokens=False)["input_ids"][0]
    assert top in capitals and top != " Austin" and probs[austin] < 0.1


@functools.cache
def multilingual_found():
    return _example("multilingual").find_supernodes(toyworld())


def test_french_off_gives_english():
    """The issue's second required outcome: the French language supernode x-2 -> an English answer."""
    model, ml = toyworld(), _example("multilingual")
    french = supernode("French", multilingual_found()["sets"]["French"])
    top, probs = _top(model, ml.FR, [scale_by(french, -2.0)])
    assert top == " big"
    grand = model.tokenizer(" grand", add_special_tokens=False)["input_ids"][0]
    assert probs[grand] < 0.05  # from 97 %
    # switched off but not inverted (x0), the frame's French tokens still carry the language
    assert _top(model, ml.FR, [scale_by(french, 0.0)])[0] == " grand"


def test_multilingual_swaps():
    model, ml = toyworld(), _example("multilingual")
    found = multilingual_found()
    sets, rep = found["sets"], found["replacements"]
    assert _top(model, ml.FR, swap(sets["French"], rep["Chinese"], 0.0, 1.0))[0] == "大"
    assert _top(model, ml.FR, swap(sets["French"], rep["English"], -2.0, 2.0))[0] == " big"
    assert _top(model, ml.FR, swap(sets["petit"], rep["grand"], 0.0, 1.0))[0] == " petit"
    assert _top(model, ml.FR, swap(sets["opposite"], rep["synonym"], -2.0, 2.0))[0] == " menu"
