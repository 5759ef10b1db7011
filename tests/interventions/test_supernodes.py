"""InterventionGraph: default and current activations, fractions, structure errors, text summary."""

import pytest
import torch
from tiny import tiny_tokenizer

from circuit_atlas.interventions.forward import FeatureActivations
from circuit_atlas.interventions.spec import Feature, Supernode
from circuit_atlas.interventions.supernodes import InterventionGraph, top_k_tokens

A, B, C, D, E = Feature(1, 3, 10), Feature(2, 3, 11), Feature(4, 5, 12), Feature(5, 5, 13), Feature(2, 4, 14)
CLEAN = {A: 2.0, B: 3.0, C: 4.0, D: 0.0, E: 1.0}


def as_tensor(values: dict) -> torch.Tensor:
    acts = torch.zeros(6, 6, 16)
    for f, v in values.items():
        acts[f.layer, f.position, f.index] = v
    return acts


def make_graph() -> InterventionGraph:
    token = Supernode("Dallas")  # an embedding node: no features
    texas = Supernode("Texas", [A, B])
    dead = Supernode("dead", [D])
    say = Supernode("say Austin", [C])
    return InterventionGraph([[token], [texas, dead], [say]], "the capital of Texas is",
                             edges=[("Dallas", "Texas"), ("Texas", "say Austin")])  # fmt: skip


def test_default_current_and_fraction():
    g = make_graph()
    g.initialize("all", CLEAN)
    assert g.default == {"Dallas": None, "Texas": 5.0, "dead": 0.0, "say Austin": 4.0}
    assert g.fraction("Texas") == 1.0 and g.percent_text("Texas") == "100%"  # before set_current: the clean run
    g.set_current(CLEAN | {A: -4.0, B: -6.0, C: 1.0})
    assert g.current["Texas"] == -10.0 and g.fraction("Texas") == -2.0 and g.percent_text("Texas") == "-200%"
    assert g.fraction("say Austin") == 0.25 and g.percent_text("say Austin") == "25%"
    # the zero-default guard: no inf, no crash, shown as n/a
    assert g.fraction("dead") is None and g.percent_text("dead") == "n/a"
    # a node without features has no activation and shows no percentage
    assert g.current["Dallas"] is None and g.fraction("Dallas") is None and g.percent_text("Dallas") == ""


def test_value_and_tensor_sources_agree_with_the_dict():
    after = CLEAN | {A: 1.0, C: 8.0}
    results = []
    sparse = [FeatureActivations(list(as_tensor(x))) for x in (CLEAN, after)]  # read through .value(feature)
    for clean, current in [(CLEAN, after), sparse, (as_tensor(CLEAN), as_tensor(after))]:
        g = make_graph()
        g.initialize("all", clean)
        g.set_current(current)
        results.append((g.default, g.current))
    assert results[0] == results[1] == results[2]
    assert results[0][1]["Texas"] == 4.0 and results[0][1]["say Austin"] == 8.0


def test_source_errors():
    g = make_graph()
    with pytest.raises(ValueError, match=r"no activation for Feature\(layer=4"):
        g.initialize("all", {A: 1.0, B: 1.0, D: 0.0})
    with pytest.raises(ValueError, match="cannot read activations from a list"):
        g.initialize("all", [1.0, 2.0])
    with pytest.raises(ValueError, match=r"\(n_layers, n_positions, d_features\)"):
        g.initialize("all", torch.zeros(3, 4))


def test_children_are_aggregated_once():
    child1 = Supernode("c1", [A, B])
    child2 = Supernode("c2", [B, C])  # B is shared: counted once
    parent = Supernode("parent", None, children=[child1, child2])
    g = InterventionGraph([[parent]], "p")
    g.initialize(parent, CLEAN)
    assert g.default["parent"] == 2.0 + 3.0 + 4.0 and g.percent_text("parent") == "100%"


def test_replacement_from_another_prompt_and_badges():
    g = make_graph()
    g.initialize("all", CLEAN)
    california = Supernode("California", [E])
    g.add_replacement("Texas", california, activations={E: 2.0})  # default from the "Oakland" prompt
    g.mark_intervention("Texas", "-2x")
    g.mark_intervention("California", "+2x")
    g.add_edge("California", "say Austin")
    g.set_current(CLEAN | {A: -4.0, B: -6.0, E: 3.0})
    assert g.default["California"] == 2.0 and g.fraction("California") == 1.5
    assert g.replacements == {"Texas": california} and g.interventions == {"Texas": "-2x", "California": "+2x"}
    g.mark_intervention("California", None)
    assert "California" not in g.interventions
    with pytest.raises(ValueError, match="already has a replacement"):
        g.add_replacement("Texas", Supernode("Ohio", [E]))


def test_structure_errors():
    with pytest.raises(ValueError, match="no supernode named 'Austin'"):
        InterventionGraph([[Supernode("Texas", [A])]], "p", edges=[("Texas", "Austin")])
    g = make_graph()
    with pytest.raises(ValueError, match="no supernode named 'nope'"):
        g.add_edge("nope", "Texas")
    with pytest.raises(ValueError, match="no supernode named"):
        g.mark_intervention("nope", "-2x")
    with pytest.raises(ValueError, match="two different supernodes"):
        g.add_edge("Texas", "Texas")
    g.add_edge("Dallas", "Texas")  # repeating an edge keeps one arrow
    assert g.edges == [("Dallas", "Texas"), ("Texas", "say Austin")]
    with pytest.raises(ValueError, match="two supernodes are named 'Texas'"):
        InterventionGraph([[Supernode("Texas", [A])], [Supernode("Texas", [B])]], "p")
    with pytest.raises(ValueError, match="two supernodes are named 'Texas'"):
        g.add_replacement("Dallas", Supernode("Texas", [E]))
    with pytest.raises(ValueError, match="rows must be a list of rows"):
        InterventionGraph([Supernode("Texas", [A])], "p")
    with pytest.raises(ValueError, match="is not a Supernode"):
        InterventionGraph([["Texas"]], "p")
    with pytest.raises(ValueError, match=r"\(token, probability\) pairs"):
        g.set_top_logits([("a", 0.5, 1)])
    with pytest.raises(ValueError, match="finite"):
        g.set_top_logits([("a", float("nan"))])


def test_summary_text():
    g = make_graph()
    g.initialize("all", CLEAN)
    g.add_replacement("Texas", Supernode("California", [E]), activations={E: 2.0})
    g.mark_intervention("Texas", "-2x")
    g.set_current(CLEAN | {A: -4.0, B: -6.0})
    g.set_top_logits([(" Sacramento", 0.5), (" Austin", 0.125)])
    text = g.summary()
    lines = text.splitlines()
    assert lines[0] == "prompt: 'the capital of Texas is'"
    row = {line.split()[0]: line for line in lines[2:]}
    assert row["say"].split()[-3:] == ["4.000", "4.000", "100%"]
    assert "Texas [-2x]" in row["Texas"] and row["Texas"].split()[-3:] == ["5.000", "-10.000", "-200%"]
    assert row["dead"].split()[-1] == "n/a"
    assert row["Dallas"].split()[-3:] == ["-", "-", "-"]
    assert "California (replaces Texas)" in row["California"] and row["California"].split()[-1] == "50%"
    # rows are listed top first, as drawn
    assert lines.index(row["say"]) < lines.index(row["Texas"]) < lines.index(row["Dallas"])
    assert "edges: Dallas -> Texas, Texas -> say Austin" in text
    assert text.endswith("top outputs: ' Sacramento' 50.0%, ' Austin' 12.5%")


def test_top_k_tokens():
    tok = tiny_tokenizer()
    logits = torch.zeros(len(tok))
    austin, texas = tok.convert_tokens_to_ids("Austin"), tok.convert_tokens_to_ids("Texas")
    logits[austin], logits[texas] = 5.0, 4.0
    top = top_k_tokens(logits, tok, k=3)
    assert [t for t, _ in top[:2]] == ["Austin", "Texas"] and len(top) == 3
    probs = torch.softmax(logits.double(), -1)
    assert top[0][1] == pytest.approx(float(probs[austin])) and top[1][1] == pytest.approx(float(probs[texas]))
    assert len(top_k_tokens(logits, tok, k=10_000)) == len(tok)
    with pytest.raises(ValueError, match=r"1-D logits.*logits\[0, -1\]"):
        top_k_tokens(logits[None], tok)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        top_k_tokens(logits, tok, k=0)
