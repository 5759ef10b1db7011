"""Intervention diagrams as data: supernodes in rows, their activations before and after.

    graph = InterventionGraph([[dallas], [texas, capital], [say_austin]], prompt)   # rows bottom -> top
    graph.initialize("all", clean_activations)     # default activation of every node
    graph.mark_intervention("Texas", "-2x")
    graph.set_current(result.activations)          # activation under the intervention
    print(graph.summary())                          # or interventions/figure.py to draw it

A node's activation is the sum of its features' activations (its own and its children's,
`Supernode.all_features()`); the fraction shown is current / default. Nodes without features
(token or embedding nodes such as "Dallas", `features=None`) carry no activation.

An activation source is a dict {Feature: float}, an object with `.value(feature) -> float`,
an object with such an `.activations` attribute, or an (n_layers, n_positions, d_features)
tensor indexed by (layer, position, index).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .spec import Feature, Supernode

ZERO = 1e-6  # |default| below this counts as zero: no fraction is shown for it


def _reader(activations: Any) -> Callable[[Feature], float]:
    """A function Feature -> activation for any of the accepted sources."""
    if isinstance(activations, dict):

        def read(f: Feature) -> float:
            if f not in activations:
                raise ValueError(f"no activation for {f} in the given dict; add it (0.0 if it was inactive)")
            return float(activations[f])

        return read
    if isinstance(activations, torch.Tensor):
        if activations.dim() != 3:
            raise ValueError(
                f"an activation tensor must be (n_layers, n_positions, d_features), got shape {tuple(activations.shape)}"
            )
        return lambda f: float(activations[f.layer, f.position, f.index])
    if callable(getattr(activations, "value", None)):
        return lambda f: float(activations.value(f))
    inner = getattr(activations, "activations", None)
    if inner is not None and callable(getattr(inner, "value", None)):
        return lambda f: float(inner.value(f))
    raise ValueError(
        f"cannot read activations from a {type(activations).__name__}; pass a dict {{Feature: float}}, "
        "an object with .value(feature), or an (n_layers, n_positions, d_features) tensor"
    )


def has_activation(node: Supernode) -> bool:
    """False for token / embedding nodes (features=None and no children): they have nothing to measure."""
    return node.features is not None or bool(node.children)


def _total(node: Supernode, read: Callable[[Feature], float]) -> float | None:
    if not has_activation(node):
        return None
    return sum(read(f) for f in node.all_features())


def top_k_tokens(logits_1d: torch.Tensor, tokenizer: Any, k: int = 5) -> list[tuple[str, float]]:
    """The k most probable next tokens as (decoded token, softmax probability), most probable first."""
    if not isinstance(logits_1d, torch.Tensor) or logits_1d.dim() != 1:
        shape = tuple(logits_1d.shape) if isinstance(logits_1d, torch.Tensor) else type(logits_1d).__name__
        raise ValueError(f"top_k_tokens needs a 1-D logits vector (vocab,), got {shape}; e.g. pass logits[0, -1]")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    probs = torch.softmax(logits_1d.detach().double(), dim=-1)
    values, ids = probs.topk(min(k, probs.numel()))
    return [(tokenizer.decode([i]), float(p)) for i, p in zip(ids.tolist(), values.tolist())]


class InterventionGraph:
    """Supernodes in rows (bottom -> top), with default and current activations, interventions,
    replacement nodes, arrows between supernodes and the top next-token outputs."""

    def __init__(self, rows: list[list[Supernode]], prompt: str, edges: Iterable[tuple[str, str]] = ()):
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ValueError("rows must be a list of rows, each a list of Supernodes (bottom row first)")
        self.rows = [list(r) for r in rows]
        self.prompt = str(prompt)
        self.nodes: dict[str, Supernode] = {}
        for r, row in enumerate(self.rows):
            for node in row:
                self._add_node(node, f"row {r}")
        self.default: dict[str, float | None] = {}
        self.current: dict[str, float | None] = {}
        self.interventions: dict[str, str] = {}
        self.replacements: dict[str, Supernode] = {}  # original name -> replacement node
        self.edges: list[tuple[str, str]] = []
        self.top_logits: list[tuple[str, float]] = []
        for a, b in edges:
            self.add_edge(a, b)

    def _add_node(self, node: Any, where: str) -> None:
        if not isinstance(node, Supernode):
            raise ValueError(f"{where}: {node!r} is not a Supernode")
        if node.name in self.nodes:
            raise ValueError(f"two supernodes are named {node.name!r}; names must be unique (they label the diagram)")
        self.nodes[node.name] = node

    def _node(self, node: Supernode | str) -> Supernode:
        name = node.name if isinstance(node, Supernode) else node
        if name not in self.nodes:
            raise ValueError(f"no supernode named {name!r}; known: {', '.join(map(repr, self.nodes)) or 'none'}")
        return self.nodes[name]

    # --- structure -------------------------------------------------------------------
    def add_edge(self, a: str, b: str) -> None:
        """An arrow from supernode `a` to supernode `b` (by name)."""
        self._node(a), self._node(b)
        if a == b:
            raise ValueError(f"an edge joins two different supernodes; got {a!r} -> {b!r}")
        if (a, b) not in self.edges:
            self.edges.append((a, b))

    def add_replacement(self, original_name: str, replacement: Supernode, activations: Any = None) -> None:
        """Show `replacement` (e.g. "California" features injected in place of "Texas") beside the original.

        Its default activation usually comes from another prompt: pass those `activations` here
        or call `initialize(replacement, ...)` later.
        """
        self._node(original_name)
        if original_name in self.replacements:
            raise ValueError(f"{original_name!r} already has a replacement ({self.replacements[original_name].name!r})")
        self._add_node(replacement, f"replacement for {original_name!r}")
        self.replacements[original_name] = replacement
        if activations is not None:
            self.initialize(replacement, activations)

    def mark_intervention(self, name: str, label: str | None) -> None:
        """Badge a node with what was done to it (e.g. "-2x", "ablated"); label=None removes the badge."""
        self._node(name)
        if label is None:
            self.interventions.pop(name, None)
        else:
            self.interventions[name] = str(label)

    def set_top_logits(self, tokens_probs: Iterable[tuple[str, float]]) -> None:
        """The next-token outputs listed beside the diagram: [(token, probability), ...]."""
        out = []
        for item in tokens_probs:
            try:
                token, p = item
                p = float(p)
            except (TypeError, ValueError):
                raise ValueError(f"top logits must be (token, probability) pairs, got {item!r}") from None
            if not math.isfinite(p):
                raise ValueError(f"probability of {token!r} is {p}; it must be a finite number")
            out.append((str(token), p))
        self.top_logits = out

    # --- activations -----------------------------------------------------------------
    def initialize(self, node: Supernode | str | list | None, activations: Any) -> None:
        """Record default activations: of `node` (a Supernode, a name or a list of them), or of
        every node in the rows for "all" / None (replacement nodes are initialized on their own,
        since they usually come from another prompt). Until `set_current` is called, a node's
        current activation is its default (the clean run, 100%)."""
        if node is None or (isinstance(node, str) and node == "all"):
            targets = [n for row in self.rows for n in row]
        elif isinstance(node, (list, tuple)):
            targets = [self._node(n) for n in node]
        else:
            targets = [self._node(node)]
        read = _reader(activations)
        for n in targets:
            self.default[n.name] = _total(n, read)
            self.current[n.name] = self.default[n.name]

    def set_current(self, activations: Any) -> None:
        """Record every node's activation under an intervention (each node's features read from `activations`)."""
        read = _reader(activations)
        for name, n in self.nodes.items():
            self.current[name] = _total(n, read)

    def fraction(self, name: str) -> float | None:
        """current / default, or None when there is no activation or the default is (about) zero."""
        self._node(name)
        default, current = self.default.get(name), self.current.get(name)
        if default is None or current is None or abs(default) < ZERO:
            return None
        return current / default

    def percent_text(self, name: str) -> str:
        """The percentage shown: "100%", "-200%", "n/a" (no default, or it is about zero), "" (no features)."""
        if not has_activation(self._node(name)):
            return ""
        frac = self.fraction(name)
        return "n/a" if frac is None else f"{frac * 100:.0f}%"

    # --- text ------------------------------------------------------------------------
    def summary(self) -> str:
        """One line per node (top row first, as drawn): name, default, current, percentage; then the top outputs."""

        def num(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"

        lines = [f"prompt: {self.prompt!r}"]
        entries = []
        for r in range(len(self.rows) - 1, -1, -1):
            for n in self.rows[r]:
                entries.append((n.name, n.name))
                if n.name in self.replacements:
                    rep = self.replacements[n.name].name
                    entries.append((rep, f"{rep} (replaces {n.name})"))
        width = max([len(shown) + 8 for _, shown in entries] + [4])
        lines.append(f"{'node':<{width}} {'default':>10} {'current':>10} {'activation':>10}")
        for name, shown in entries:
            if name in self.interventions:
                shown = f"{shown} [{self.interventions[name]}]"
            pct = self.percent_text(name) or "-"
            default, current = num(self.default.get(name)), num(self.current.get(name))
            lines.append(f"{shown:<{width}} {default:>10} {current:>10} {pct:>10}")
        if self.edges:
            lines.append("edges: " + ", ".join(f"{a} -> {b}" for a, b in self.edges))
        if self.top_logits:
            lines.append("top outputs: " + ", ".join(f"{t!r} {p:.1%}" for t, p in self.top_logits))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"InterventionGraph({len(self.nodes)} nodes in {len(self.rows)} rows, prompt={self.prompt!r})"
