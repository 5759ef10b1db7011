"""The intervention diagram: PNG and SVG files, their content, and the path rules."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from circuit_atlas.interventions.figure import COLORS, draw_intervention_graph
from circuit_atlas.interventions.spec import Feature, Supernode
from circuit_atlas.interventions.supernodes import InterventionGraph

A, B, C, D, E = Feature(1, 3, 10), Feature(2, 3, 11), Feature(4, 5, 12), Feature(5, 5, 13), Feature(2, 4, 14)
CLEAN = {A: 2.0, B: 3.0, C: 4.0, D: 0.0, E: 1.0}


def make_graph() -> InterventionGraph:
    g = InterventionGraph(
        [[Supernode("Dallas")], [Supernode("Texas", [A, B]), Supernode("dead", [D])], [Supernode("say Austin", [C])]],
        "Fact: the capital of the state containing Dallas is",
        edges=[("Dallas", "Texas"), ("Texas", "say Austin")],
    )
    g.initialize("all", CLEAN)
    g.add_replacement("Texas", Supernode("California", [E]), activations={E: 2.0})
    g.add_edge("California", "say Austin")
    g.mark_intervention("Texas", "−2×")
    g.set_current(CLEAN | {A: -4.0, B: -6.0, E: 4.0})
    g.set_top_logits([(" Sacramento", 0.52), (" Austin", 0.11), ("\n", 0.03)])
    return g


def svg_texts(path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_png(tmp_path):
    import matplotlib.image

    path = tmp_path / "diagram.png"
    draw_intervention_graph(make_graph(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 200
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10  # not one flat colour


def test_svg_holds_names_percentages_badges_and_outputs(tmp_path):
    path = tmp_path / "diagram.svg"
    draw_intervention_graph(make_graph(), str(path))
    texts = svg_texts(path)
    for expected in ["Dallas", "Texas", "dead", "say Austin", "California", "-200%", "100%", "200%", "n/a", "−2×",
                     "Top outputs", "Sacramento  52%", "⏎  3%",
                     '"Fact: the capital of the state containing Dallas is"']:  # fmt: skip
        assert expected in texts, expected
    assert "Dallas" in texts and not any(t.endswith("%") and "Dallas" in t for t in texts)


def test_box_colours():
    fig = draw_intervention_graph(make_graph())
    faces = [p.get_facecolor() for p in fig.axes[0].patches if type(p).__name__ == "FancyBboxPatch"]
    assert len(faces) == 5  # four row nodes and one replacement

    def count(style):
        from matplotlib.colors import to_rgba

        return sum(np.allclose(f, to_rgba(COLORS[style][0])) for f in faces)

    # Texas (-200%) is greyed; "dead" has no fraction (n/a) and keeps its colour
    assert (count("faded"), count("normal"), count("replacement"), count("token")) == (1, 2, 1, 1)


def test_no_suffix_writes_both_and_output_is_repeatable(tmp_path):
    fig = draw_intervention_graph(make_graph(), tmp_path / "diagram")
    assert type(fig).__name__ == "Figure"
    png, svg = tmp_path / "diagram.png", tmp_path / "diagram.svg"
    assert png.read_bytes()[:4] == b"\x89PNG" and "Texas" in svg_texts(svg)
    draw_intervention_graph(make_graph(), tmp_path / "again")
    assert (tmp_path / "again.svg").read_bytes() == svg.read_bytes()
    assert (tmp_path / "again.png").read_bytes() == png.read_bytes()


def test_bad_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"cannot save a figure as '\.pdf'; use a \.png or \.svg path"):
        draw_intervention_graph(make_graph(), tmp_path / "diagram.pdf")
    assert list(tmp_path.iterdir()) == []


def test_odd_text_and_empty_graph(tmp_path):
    # '$' would start mathtext; an empty graph, no logits and an empty prompt still draw
    g = InterventionGraph([[Supernode("$x$ cost", [A])]], "costs $5 and $6")
    g.initialize("all", CLEAN)
    draw_intervention_graph(g, tmp_path / "odd.svg")
    assert "$x$ cost" in svg_texts(tmp_path / "odd.svg")
    draw_intervention_graph(InterventionGraph([], ""), tmp_path / "empty.png")
    with pytest.raises(ValueError, match="needs an InterventionGraph"):
        draw_intervention_graph([[Supernode("x")]])
