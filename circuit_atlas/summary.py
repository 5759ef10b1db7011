"""One-screen text summary of an attribution graph (used by the CLI and the demo)."""

from __future__ import annotations

from .features.describe import describe_node
from .graph import Graph


def summarize(graph: Graph, pruned: Graph | None = None, top_nodes: int = 0, model=None) -> str:
    """Text summary; with `model`, the top nodes get automatic descriptions (features/describe.py)."""
    lines = [f"prompt: {graph.prompt!r}  ({len(graph.tokens)} tokens)"]
    lines.append("top logits:")
    for label, p in zip(graph.logit_labels, graph.logit_probabilities):
        lines.append(f"  {p:7.2%}  {label!r}")
    counts = ", ".join(f"{graph.count(k)} {k}" for k in ("feature", "error", "embedding", "logit"))
    lines.append(f"graph: {graph.n_nodes} nodes ({counts}), {graph.n_edges} non-zero edges, "
                 f"{len(graph.row_nodes)} rows computed")  # fmt: skip
    scores = graph.scores()
    lines.append(f"scores: replacement {scores['replacement']:.3f}, completeness {scores['completeness']:.3f}")
    if pruned is not None:
        s = pruned.metadata.get("pruning", {})
        lines.append(
            f"pruned (node {s.get('node_threshold')}, edge {s.get('edge_threshold')}): "
            f"{pruned.n_nodes} nodes, {pruned.n_edges} edges"
        )
        if top_nodes and pruned.influence is not None:
            table = pruned.nodes
            table = table[table.kind.isin(["feature", "error"])].sort_values("influence", ascending=False)
            lines.append("most influential nodes:")
            for row in table.head(top_nodes).itertuples():
                if model is not None:
                    about = describe_node(model, pruned, row.Index)
                else:
                    token = graph.tokens[row.position] if 0 <= row.position < len(graph.tokens) else ""
                    about = f"at {token!r}"
                lines.append(f"  {row.id:22s} influence {row.influence:.4f}  {about}")
    return "\n".join(lines)
