"""One-screen text summary of an attribution graph (used by the CLI and the demo); tokens print as
display.py shows them.
"""

from __future__ import annotations

from .display import display_token, show_text


def _dashboard_labels(model) -> dict[tuple[int, int], str]:
    """{(layer, index): label} from the feature dashboards of the model's transcoders, if any are built."""
    if model is None:
        return {}
    from .features.dashboards import feature_labels

    try:
        return feature_labels(model.transcoders.name)
    except (OSError, ValueError):  # a damaged dashboard folder must not break a summary
        return {}


def summarize(graph, pruned=None, top_nodes: int = 0, model=None) -> str:
    """Text summary; with `model`, the top nodes get their dashboard labels (features/dashboards) and
    automatic descriptions (features/describe.py)."""
    from .features.describe import describe_node

    tokenizer = model.tokenizer if model is not None else None
    lines = [f"prompt: {graph.prompt!r}  ({len(graph.tokens)} tokens)"]
    targets = graph.metadata.get("targets") or []
    probs = [float(p) for p in graph.logit_probabilities]
    custom = any(t.get("custom") for t in targets)
    covered = "" if custom else f", which cover {sum(probs):.1%} of the next-token probability"
    lines.append(f"top logits: the graph explains these {len(probs)} target{'s' * (len(probs) != 1)}{covered}")
    for i, (label, p) in enumerate(zip(graph.logit_labels, probs)):
        t = targets[i] if i < len(targets) else {}
        if tokenizer is not None and not t.get("custom") and "token_id" in t:
            shown = display_token(tokenizer, t["token_id"])
        else:
            shown = show_text(label)
        lines.append(f"  {p:7.2%}  {shown}")
    counts = ", ".join(f"{graph.count(k)} {k}" for k in ("feature", "error", "embedding", "logit"))
    lines.append(f"graph: {graph.n_nodes} nodes ({counts}), {graph.n_edges} non-zero edges, "
                 f"{len(graph.row_nodes)} rows computed")  # fmt: skip
    scores = graph.scores()
    lines.append(
        f"scores: replacement {scores['replacement']:.3f} (share of the influence that reaches token embeddings "
        f"rather than error nodes), completeness {scores['completeness']:.3f} (share of the nodes' inputs not from "
        "error nodes)"
    )
    if pruned is not None:
        s = pruned.metadata.get("pruning", {})
        lines.append(
            f"pruned (node {s.get('node_threshold')}, edge {s.get('edge_threshold')}): "
            f"{pruned.n_nodes} nodes, {pruned.n_edges} edges"
        )
        if top_nodes and pruned.influence is not None:
            table = pruned.nodes
            table = table[table.kind.isin(["feature", "error"])].sort_values("influence", ascending=False)
            lines.append(
                "most influential nodes: influence = how much of the targets' probability-weighted input flows "
                f"through the node, summed over all paths (the targets together weigh {sum(probs):.3f})"
            )
            labels = _dashboard_labels(model)
            for row in table.head(top_nodes).itertuples():
                if model is not None:
                    about = describe_node(model, pruned, row.Index)
                    if row.kind == "feature" and (row.layer, row.feature) in labels:
                        about = f"[{labels[(row.layer, row.feature)]}] {about}"
                else:
                    token = graph.tokens[row.position] if 0 <= row.position < len(graph.tokens) else ""
                    about = f"at {show_text(token)}"
                lines.append(f"  {row.id:22s} influence {row.influence:.4f}  {about}")
    return "\n".join(lines)
