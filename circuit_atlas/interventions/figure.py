"""Draw an InterventionGraph the way the circuit papers draw their intervention diagrams.

Rounded supernode boxes in rows (inputs at the bottom, outputs at the top), each with its name
and activation percentage; boxes at or below 25% (or negative) are greyed; intervention badges
sit on the corner of a box; replacement nodes are drawn offset above their original in another
colour; arrows join supernodes; the prompt is at the bottom and the top outputs on the right.

matplotlib only, through `matplotlib.figure.Figure` (never pyplot), so no display is needed and
no global figure state is touched. The layout depends only on the graph, so output is repeatable.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from .supernodes import InterventionGraph, has_activation

ROW_H = 1.6  # vertical distance between rows (data units)
ROW_H_REPLACED = 2.3  # ... when replacement nodes need room above their originals
BOX_H = 0.75
GAP = 0.5  # horizontal gap between boxes in a row
CHAR_W = 0.11  # data units per character at the box font size
INCH = 0.85  # inches per data unit
PROMPT_WRAP = 80  # characters per prompt line
FADED_AT = 0.25  # fractions at or below this are greyed

COLORS = {
    "normal": ("#f1e2bd", "#8a7245", "#2b2b2b"),  # face, edge, text
    "faded": ("#efefef", "#bdbdbd", "#9a9a9a"),
    "replacement": ("#cfe2f6", "#3a6ea5", "#1d3a5c"),
    "token": ("#ffffff", "#808080", "#2b2b2b"),
}
BADGE = "#b83227"
ARROW = "#6b6b6b"
SUFFIXES = (".png", ".svg")


def _box_width(graph: InterventionGraph, name: str) -> float:
    text = max(len(name), len(graph.percent_text(name)))
    return max(1.4, CHAR_W * text + 0.6)


def _layout(graph: InterventionGraph) -> dict[str, tuple[float, float, float]]:
    """name -> (centre x, centre y, width): rows centred on x = 0, replacements up and to the right."""
    place = {}
    row_h = ROW_H_REPLACED if graph.replacements else ROW_H
    for r, row in enumerate(graph.rows):
        widths = [_box_width(graph, n.name) for n in row]
        x = -(sum(widths) + GAP * (len(row) - 1)) / 2
        for n, w in zip(row, widths):
            place[n.name] = (x + w / 2, r * row_h, w)
            x += w + GAP
    for original, rep in graph.replacements.items():  # insertion order: an original is placed first
        ox, oy, ow = place[original]
        w = _box_width(graph, rep.name)
        place[rep.name] = (ox + 0.3 * ow, oy + BOX_H + 0.15, w)
    return place


def _style(graph: InterventionGraph, name: str, replacement: bool) -> tuple[str, str, str]:
    if not has_activation(graph.nodes[name]):
        return COLORS["token"]
    frac = graph.fraction(name)
    if frac is not None and frac <= FADED_AT:
        return COLORS["faded"]
    return COLORS["replacement" if replacement else "normal"]


def _check_path(path: str | Path) -> list[Path]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == "":
        return [path.with_name(path.name + ".png"), path.with_name(path.name + ".svg")]
    if suffix not in SUFFIXES:
        raise ValueError(f"cannot save a figure as {path.suffix!r}; use a .png or .svg path, or no suffix for both")
    return [path]


def draw_intervention_graph(graph: InterventionGraph, path: str | Path | None = None):
    """Draw `graph`; returns the matplotlib Figure. `path` ending .png or .svg writes that format,
    a path without a suffix writes both (path.png and path.svg)."""
    try:  # matplotlib is only needed for drawing
        from matplotlib import rc_context
        from matplotlib.figure import Figure
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    except ImportError:
        raise ImportError("draw_intervention_graph needs matplotlib: pip install matplotlib") from None

    if not isinstance(graph, InterventionGraph):
        raise ValueError(f"draw_intervention_graph needs an InterventionGraph, got {type(graph).__name__}")
    targets = _check_path(path) if path is not None else []  # a bad suffix fails before any drawing

    place = _layout(graph)
    replacements = {rep.name for rep in graph.replacements.values()}
    prompt = textwrap.wrap(f'"{graph.prompt}"', PROMPT_WRAP, replace_whitespace=False, drop_whitespace=False) or ['""']
    half = max([abs(x) + w / 2 for x, _, w in place.values()] + [CHAR_W * max(map(len, prompt)) / 2, 2.0])
    left, right = -half - 0.4, half + 0.4
    bottom = -ROW_H * 0.6 - 0.32 * len(prompt)
    top = max([y for _, y, _ in place.values()] + [0.0]) + BOX_H / 2 + 0.6
    logit_x = right + 0.3
    if graph.top_logits:
        longest = max(len(_token_text(t)) + 7 for t, _ in graph.top_logits)
        right = logit_x + max(CHAR_W * longest, CHAR_W * 12) + 0.4

    fig = Figure(figsize=((right - left) * INCH, (top - bottom) * INCH))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_axis_off()

    boxes = {}
    for name, (x, y, w) in place.items():  # rows first, so replacements are drawn on top
        face, edge, ink = _style(graph, name, name in replacements)
        box = FancyBboxPatch((x - w / 2, y - BOX_H / 2), w, BOX_H, boxstyle="round,pad=0,rounding_size=0.18",
                             facecolor=face, edgecolor=edge, linewidth=1.4, zorder=3)  # fmt: skip
        ax.add_patch(box)
        boxes[name] = box
        pct = graph.percent_text(name)
        if pct:
            ax.text(x, y + 0.14, name, ha="center", va="center", fontsize=10, color=ink, zorder=4, parse_math=False)
            ax.text(x, y - 0.18, pct, ha="center", va="center", fontsize=9, color=ink, fontweight="bold", zorder=4,
                    parse_math=False)  # fmt: skip
        else:
            ax.text(x, y, name, ha="center", va="center", fontsize=10, color=ink, zorder=4, parse_math=False)
        if name in graph.interventions:
            ax.text(x - w / 2 + 0.1, y + BOX_H / 2, graph.interventions[name], ha="center", va="center", fontsize=8,
                    color="white", fontweight="bold", zorder=6, parse_math=False,
                    bbox={"boxstyle": "round,pad=0.25", "facecolor": BADGE, "edgecolor": "none"})  # fmt: skip

    for a, b in graph.edges:
        faded = _style(graph, a, a in replacements) == COLORS["faded"]
        ax.add_patch(FancyArrowPatch((place[a][0], place[a][1]), (place[b][0], place[b][1]), patchA=boxes[a],
                                     patchB=boxes[b], arrowstyle="-|>", mutation_scale=14, linewidth=1.3,
                                     color="#c8c8c8" if faded else ARROW, zorder=2))  # fmt: skip

    for i, line in enumerate(prompt):
        ax.text(0, -ROW_H * 0.5 - 0.32 * i, line, ha="center", va="center", fontsize=11, style="italic",
                color="#333333", parse_math=False)  # fmt: skip
    if graph.top_logits:
        y = top - 0.5
        ax.text(logit_x, y, "Top outputs", ha="left", va="center", fontsize=10, fontweight="bold", parse_math=False)
        for token, p in graph.top_logits:
            y -= 0.38
            ax.text(logit_x, y, f"{_token_text(token)}  {p:.0%}", ha="left", va="center", fontsize=10,
                    color="#333333", parse_math=False)  # fmt: skip

    # svg: keep text as <text> (searchable, editable) and drop the date and random ids, for repeatable files
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "circuit-atlas"}):
        for target in targets:
            fmt = target.suffix.lower()[1:]
            meta = {"Date": None} if fmt == "svg" else {}
            fig.savefig(target, format=fmt, dpi=150, facecolor="white", metadata=meta)
    return fig


def _token_text(token: str) -> str:
    """A token as shown in the outputs list: outer spaces dropped, newlines as a visible mark."""
    shown = token.replace("\n", "⏎").strip()
    return shown if shown else repr(token)
