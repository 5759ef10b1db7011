"""Readable views of one dashboard: a text block for the terminal, and a PNG/SVG figure.

Text: header (label, frequency, quantiles), a one-line histogram, the promoted / suppressed tokens,
then the examples of each band with the example's token in [[brackets]] and active tokens
followed by their activation in braces.
"""

from __future__ import annotations

from pathlib import Path

from .dashboard import Example, FeatureDashboard

BARS = " ▁▂▃▄▅▆▇█"
SUFFIXES = (".png", ".svg")


def _tok(t: str) -> str:
    return t.replace("\n", "⏎")


def example_line(e: Example) -> str:
    parts = []
    for i, (t, a) in enumerate(zip(e.tokens, e.acts)):
        s = _tok(t)
        if i == e.max_index:
            s = f"[[{s}]]"
        if a > 0:
            s += f"{{{a:.2f}}}"
        parts.append(s)
    return f"{e.value:7.3f}  " + "".join(parts) + ("   (repeated)" if e.repeated else "")


def _tokens(pairs) -> str:
    return ", ".join(f"{t!r} {v:+.3f}" for t, v in pairs) or "-"


def dashboard_text(d: FeatureDashboard, n_examples: int = 8) -> str:
    lines = [f"{d.transcoders} feature L{d.layer}/{d.index}: {d.label}"
             + ("  (automatic)" if d.label_source == "automatic" else "  (by a person)")]  # fmt: skip
    lines.append(f"active on {d.count} of {d.n_tokens} tokens ({100 * d.frequency:.3f} %); "
                 f"mean {d.mean:.3f}, max {d.max:.3f}")  # fmt: skip
    if d.count:
        q = "  ".join(f"q{100 * k:g}={v:.3f}" for k, v in d.quantiles.items() if k in (0.1, 0.5, 0.9, 0.99))
        peak = max(d.histogram_counts)
        bars = "".join(BARS[min(8, round(8 * c / peak))] if c else " " for c in d.histogram_counts)
        lines.append(f"quantiles {q}")
        lines.append(f"histogram {d.histogram_edges[0]:.3g} |{bars}| {d.histogram_edges[-1]:.3g}")
    lines.append(f"promotes  {_tokens(d.top_logits[:6])}")
    lines.append(f"suppresses {_tokens(d.bottom_logits[:6])}")
    for out, (top, _) in sorted(d.logits_per_layer.items()):
        lines.append(f"  via layer {out}: {_tokens(top[:4])}")
    if d.top_inputs:
        lines.append(f"excited by {_tokens(d.top_inputs[:6])}")
    for band in d.bands:
        if band.examples:
            lines.append(f"-- {band.name} ({band.low:.3f} .. {band.high:.3f})")
            lines += [example_line(e) for e in band.examples[:n_examples]]
    return "\n".join(lines)


def dashboard_figure(d: FeatureDashboard, path: str | Path | None = None, n_examples: int = 8):
    """The examples with tokens shaded by activation, and the histogram; returns the matplotlib Figure.
    path: .png or .svg writes that format; a path without a suffix writes both."""
    from matplotlib.figure import Figure

    targets = []
    if path is not None:
        p = Path(path)
        if p.suffix.lower() not in SUFFIXES + ("",):
            raise ValueError(f"cannot save a figure as {p.suffix!r}; use a .png or .svg path, or no suffix for both")
        targets = [p] if p.suffix else [p.with_name(p.name + s) for s in SUFFIXES]
    rows = []
    for band in d.bands:
        if band.examples:
            rows.append(("band", band.name))
            rows += [("ex", e) for e in band.examples[:n_examples]]
    height = 1.8 + 0.26 * len(rows)
    fig = Figure(figsize=(10, height))
    top_h = 1.4 / height
    ax = fig.add_axes((0.07, 1 - top_h + 0.12 / height, 0.9, top_h - 0.5 / height))
    if d.histogram_counts:
        edges = d.histogram_edges
        ax.bar(range(len(d.histogram_counts)), d.histogram_counts, color="#e8833a", width=1.0)
        ticks = list(range(0, len(d.histogram_counts), max(1, len(d.histogram_counts) // 6)))
        ax.set_xticks(ticks, [f"{edges[i]:.2g}" for i in ticks], fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"L{d.layer}/{d.index}: {d.label}   ({100 * d.frequency:.3f} % of tokens, max {d.max:.2f})",
                 fontsize=9, loc="left")  # fmt: skip
    text = fig.add_axes((0.02, 0.0, 0.96, 1 - top_h - 0.1 / height))
    text.set_axis_off()
    text.set_xlim(0, 100)
    text.set_ylim(len(rows) + 0.5, 0.5)
    peak = max(d.max, 1e-9)
    for y, (kind, item) in enumerate(rows, 1):
        if kind == "band":
            text.text(0, y, item, fontsize=8, weight="bold", va="center")
            continue
        x = 1.0
        for i, (t, a) in enumerate(zip(item.tokens, item.acts)):
            label = t.replace("\n", "⏎") or " "
            shade = min(1.0, max(0.0, a / peak))
            text.text(x, y, label, fontsize=8, va="center", family="monospace",
                               weight="bold" if i == item.max_index else "normal",
                               bbox=dict(boxstyle="square,pad=0.05", lw=0, fc=(0.91, 0.51, 0.23, shade)))  # fmt: skip
            x += 0.78 * len(label) + 0.05  # monospace: a fixed advance per character
        text.text(
            99, y, f"{item.value:.2f}" + (" (rep.)" if item.repeated else ""), fontsize=7, va="center", ha="right"
        )
    for t in targets:
        t.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(t, dpi=110)
    return fig
