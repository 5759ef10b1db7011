"""Influence of every node on the logits, and the graph-level replacement/completeness scores.

Influence is the total absolute path mass from a node to the weighted logits, with each
target's inputs normalized to sum to one:

    Â[t, s] = |A[t, s]| / max(Σ_s' |A[t, s']|, 1e-10)        (row-normalized absolute adjacency)
    I       = wᵀ (Â + Â² + Â³ + …)                            (w: probabilities on logit nodes)

Everything here works on the graph's *sparse rectangular* storage: a CSR (R, S) (sparse.py)
holding rows only for `row_nodes` (R,), whose columns are the first S nodes. Nodes without a
row are pure sources, which is also what lets attribution call `node_influence` on a partial
graph (only some rows computed so far). The series is summed by propagating one row vector at
a time, so the cost is one pass over the nnz stored edges per path length (at most the DAG's
depth), never an N x N inverse and never a dense (R, S) matrix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .sparse import CSR

if TYPE_CHECKING:
    from .graph import Graph

_EPS = 1e-10
_MAX_ITERATIONS = 1000


def as_csr(edges: torch.Tensor | CSR) -> CSR:
    """A CSR as it is; a dense (R, S) tensor converted (its non-zero entries)."""
    return edges if isinstance(edges, CSR) else CSR.from_dense(edges)


def normalized_abs(edges: torch.Tensor | CSR) -> torch.Tensor | CSR:
    """Â[t, s] = |A[t, s]| / max(Σ_s |A[t, s]|, 1e-10), per row, as new values in the input's form.

    CSR -> CSR of the same structure; a dense (R, S) tensor -> a dense (R, S) float32 tensor.
    """
    if isinstance(edges, CSR):
        return edges.abs_normalized()
    if edges.dim() != 2:
        raise ValueError(f"edges must be 2-D (rows, sources), got shape {tuple(edges.shape)}")
    out = edges.detach().abs().to(torch.float32)  # a copy: abs() never aliases its input
    out /= out.sum(dim=1, keepdim=True).clamp_min(_EPS)
    return out


def propagate(
    norm: CSR,
    row_nodes: torch.Tensor,
    n_nodes: int,
    weights: torch.Tensor,
    max_iterations: int = _MAX_ITERATIONS,
    *,
    node_layer: torch.Tensor | None = None,
) -> torch.Tensor:
    """wᵀ(Â + Â² + …) for an already row-normalized `norm` (R, S) CSR. Returns (n_nodes,) float32.

    node_layer: (n_nodes,) the layer of every node (graph.layer). Given it, the sum is one pass over
    the stored edges in layer order (`_propagate_by_layer`); without it, or when the edges do not go
    from lower layers to higher ones, one pass per path length (`_propagate_by_path_length`).
    """
    norm = as_csr(norm)
    n_rows, n_src = norm.shape
    if row_nodes.shape != (n_rows,):
        raise ValueError(f"row_nodes has shape {tuple(row_nodes.shape)}, expected ({n_rows},)")
    if weights.shape != (n_nodes,):
        raise ValueError(f"weights has shape {tuple(weights.shape)}, expected ({n_nodes},)")
    if n_src > n_nodes:
        raise ValueError(f"edges has {n_src} source columns but the graph has only {n_nodes} nodes")
    if node_layer is not None:
        if node_layer.shape != (n_nodes,):
            raise ValueError(f"node_layer has shape {tuple(node_layer.shape)}, expected ({n_nodes},)")
        influence = _propagate_by_layer(norm, row_nodes.to(torch.long), n_nodes, weights, node_layer)
        if influence is not None:
            return influence
    return _propagate_by_path_length(norm, row_nodes, n_nodes, weights, max_iterations)


def _propagate_by_layer(
    norm: CSR,
    rows: torch.Tensor,
    n_nodes: int,
    weights: torch.Tensor,
    node_layer: torch.Tensor,
    row_scale: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """One pass over the edges, rows taken from the top layer down; None if the layers do not order the DAG.

    In an attribution graph every edge runs from a lower layer to a higher one (a feature at layer l
    reads features and errors below l and embeddings; logits read everything). So once the rows of
    layers above λ have sent their mass, the total weight m[t] = w[t] + I[t] of a row node t at layer λ
    is final, and t sends m[t] · Â[t, :] to its sources once:

        for λ from the top layer down:   I[:S] += m[rows at λ] @ Â[rows at λ]     (one pass per row)

    which is Σ_k wᵀ Âᵏ with every edge read once instead of once per path length. If some edge broke
    the order (it would reach a row already sent, or carry a non-finite value), the result is
    discarded (None) and the caller falls back to the path-length sum, which is right for any DAG.
    row_scale: (R,) when `norm` holds |A| rather than Â: Â[t] = row_scale[t] · |A[t]| (no normalized copy).
    """
    n_rows, n_src = norm.shape
    layer = node_layer.to(torch.long).cpu()[rows]  # (R,)
    order = torch.argsort(layer, descending=True, stable=True)
    sorted_layers = layer[order]
    w = weights.detach().to(torch.float32)
    influence = torch.zeros(n_nodes, dtype=torch.float32)
    sent = torch.zeros(n_rows)  # (R,) the mass each row sent with
    bounds = torch.unique_consecutive(sorted_layers, return_counts=True)[1].cumsum(0).tolist()
    start = 0
    for end in bounds:
        group = order[start:end].sort().values  # rows of one layer, in storage order (blocks below)
        start = end
        mass = w[rows[group]] + influence[rows[group]]  # (g,) final: everything above has sent
        sent[group] = mass
        if bool(mass.any()):
            v = torch.zeros(n_rows, dtype=torch.float32)
            v[group] = mass if row_scale is None else mass * row_scale[group]
            influence[:n_src] += norm.rmatvec(v)
    # the order held iff no row received mass after it sent (and nothing is NaN / inf)
    if not bool(torch.isfinite(influence).all()) or not torch.equal(w[rows] + influence[rows], sent):
        return None
    return influence


def _propagate_by_path_length(
    norm: CSR, row_nodes: torch.Tensor, n_nodes: int, weights: torch.Tensor, max_iterations: int
) -> torch.Tensor:
    """wᵀ(Â + Â² + …), one pass over the stored edges per path length.

    v starts as w; each step sends the mass sitting on row nodes one edge back to their sources
    (v_src = v[row_nodes] @ Â, one pass over the stored edges, scattered into node space). Mass
    on nodes without a row stops there. The graph is a DAG, so v becomes exactly zero after at
    most depth + 1 <= R + 1 steps; if it does not, the edges contain a cycle (or NaN) and we
    raise instead of looping.
    """
    n_rows, n_src = norm.shape
    rows = row_nodes.to(torch.long)
    cap = min(max_iterations, n_rows + 1)
    influence = torch.zeros(n_nodes, dtype=torch.float32)
    v = weights.detach().to(torch.float32).clone()  # (n_nodes,)
    for _ in range(cap):
        v_rows = v[rows]  # (R,) mass sitting on nodes that have inputs
        if not bool(v_rows.any()):
            return influence
        v = torch.zeros(n_nodes, dtype=torch.float32)
        v[:n_src] = norm.rmatvec(v_rows)  # (R,) @ (R, S) -> (S,)
        influence += v
    if not bool(v[rows].any()):
        return influence
    raise RuntimeError(
        f"node influence did not vanish after {cap} iterations (cap = min(max_iterations={max_iterations}, "
        f"rows + 1 = {n_rows + 1})): the edges contain a cycle or non-finite values, so this is not an attribution DAG"
    )


def node_influence(
    edges: torch.Tensor | CSR,
    row_nodes: torch.Tensor,
    n_nodes: int,
    weights: torch.Tensor,
    max_iterations: int = _MAX_ITERATIONS,
    *,
    node_layer: torch.Tensor | None = None,
) -> torch.Tensor:
    """I = wᵀ(Â + Â² + Â³ + …) on rectangular storage. Returns (n_nodes,) float32.

    edges: (R, S) signed direct effects as a CSR (e.g. `graph.csr`) or a dense tensor; row i is
    node row_nodes[i], column j is node j.
    weights: (n_nodes,) usually the logit probabilities (see `logit_weights`).
    Rows that are absent act as pure sources, so this works on partial graphs too.
    node_layer: (n_nodes,) the layer of each node (e.g. `graph.layer`): one pass over the edges
    instead of one per path length (see `propagate`).
    """
    norm = as_csr(edges).abs_normalized()
    return propagate(norm, row_nodes, n_nodes, weights, max_iterations, node_layer=node_layer)


def logit_weights(graph: Graph) -> torch.Tensor:
    """(N,) float32: each logit node's probability (custom targets: their own), zero elsewhere."""
    from .graph import LOGIT

    w = torch.zeros(graph.n_nodes, dtype=torch.float32)
    is_logit = graph.kind == LOGIT
    w[is_logit] = graph.activation[is_logit].to(torch.float32)
    return w


def graph_scores(graph: Graph) -> dict[str, float]:
    """Replacement and completeness scores of an (unpruned) graph.

    With I the node influence and w the logit weights:

        replacement  = Σ_{s ∈ embeddings} I[s] / (Σ_{s ∈ embeddings} I[s] + Σ_{s ∈ errors} I[s])
            the share of the influence that reaches the inputs through tokens rather than errors.

        completeness = Σ_{t ∈ R} (1 − Σ_{s ∈ errors} Â[t, s]) · (I[t] + w[t])  /  Σ_{t ∈ R} (I[t] + w[t])
            the influence-weighted share of each target's input that is explained by non-error
            nodes, where R = the rows in `row_nodes` that have any input at all.

    Unlike circuit-tracer, nodes without computed inputs (errors, embeddings, features whose
    inputs were never attributed, all-zero rows) are *not* counted as fully explained: we know
    nothing about how they are explained, so they are left out of both sums. Otherwise an error
    node with a large influence would raise completeness. Either score is NaN when its
    denominator is zero (e.g. a graph with no edges).
    """
    from .graph import EMBEDDING, ERROR

    w = logit_weights(graph)
    csr = graph.csr
    rows = graph.row_nodes.to(torch.long)
    # |A| and each row's mass; Â = |A| / max(mass, eps) is never materialised (one pass fewer)
    absolute = CSR(csr.indptr, csr.sources, csr.values.abs(), csr.n_cols)  # (R, S)
    mass = absolute.row_sum(absolute.values)  # (R,)
    inverse = 1.0 / mass.clamp_min(_EPS)
    error_share = absolute.matvec(graph.kind[: csr.n_cols] == ERROR) * inverse  # (R,) Σ of Â over error sources
    influence = _propagate_by_layer(absolute, rows, graph.n_nodes, w, graph.layer, row_scale=inverse)
    if influence is None:  # the layers do not order these edges: the path-length sum on Â
        influence = propagate(absolute.scale_rows_(inverse), rows, graph.n_nodes, w)

    emb = float(influence[graph.kind == EMBEDDING].sum())
    err = float(influence[graph.kind == ERROR].sum())
    replacement = emb / (emb + err) if emb + err > 0 else float("nan")

    has_input = mass > 0  # (R,) rows with any input
    weight = (influence[rows] + w[rows])[has_input]
    explained = ((1.0 - error_share[has_input]) * weight).sum()
    total = float(weight.sum())
    completeness = float(explained) / total if total > 0 else float("nan")
    return {"replacement": replacement, "completeness": completeness}
