"""Pruning: keep the nodes and edges that carry most of the influence on the logits.

The recipe (circuit-tracer's, reimplemented on sparse rectangular storage: every step is a pass
over the graph's nnz stored edges, and the edge threshold sorts those nnz scores, never N²):

1. Node influence I on the full graph. Keep nodes whose influence reaches the smallest prefix
   (by descending I) holding `node_threshold` of the total; embeddings and logits are always
   kept, errors are pruned like features.
2. P = the graph restricted to kept nodes, P̂ its row-normalized |P|, I_P its influence.
3. Edge score E[t, s] = P̂[t, s] · (I_P[t] + w[t]): the edge's share of its target's input times
   the target's total weight on the logits. Keep the smallest set of edges holding
   `edge_threshold` of the total score; the threshold is found among the *non-zero* scores only.
4. Repeat until nothing changes: features and errors need a kept outgoing edge; features that
   have a row need a kept incoming edge (features without a row were never expanded, so their
   inputs are unknown rather than absent); edges touching dropped nodes are cleared.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from .graph import EMBEDDING, ERROR, FEATURE, LOGIT, Graph
from .influence import logit_weights, propagate
from .sparse import CSR

_EPS = 1e-10
_BLOCK = 1 << 20  # entries per block of the running sums


def check_threshold(value: float, name: str) -> float:
    """Return `value` as a float if it lies in (0, 1]; otherwise raise ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def find_threshold(scores: torch.Tensor, threshold: float) -> float:
    """Smallest score of the shortest descending prefix whose share of the total reaches `threshold`.

    Keeping {score >= returned value} keeps that prefix (plus ties). Returns +inf when there is
    no mass at all (empty or all-zero scores), so that nothing is kept. Zero scores never change
    the result (they add nothing to any prefix), so edge scores can be passed with their zeros.

    Memory: one sorted copy of the scores (no index array, no full-length cumulative sum): the
    float64 running sum is carried across blocks, which rounds exactly as one sequential
    cumsum over the whole sorted array would.
    """
    flat = scores.detach().flatten().cpu()
    n = flat.numel()
    if n == 0:
        return math.inf
    ordered = np.sort(flat.numpy())[::-1]  # descending view of one ascending copy

    def running_sums():  # (start, cum) per block; cum[k] = Σ ordered[: start + k + 1] in float64
        running = 0.0
        for start in range(0, n, _BLOCK):
            block = ordered[start : start + _BLOCK].astype(np.float64)
            cum = np.cumsum(np.concatenate(([running], block)))[1:]
            running = float(cum[-1])
            yield start, cum

    total = 0.0
    for _, cum in running_sums():
        total = float(cum[-1])
    if not total > 0:
        return math.inf
    for start, cum in running_sums():
        share = cum / total  # ends at exactly 1.0
        k = int(np.searchsorted(share, threshold, side="left"))
        if k < share.shape[0]:
            return float(ordered[start + k])
    return float(ordered[n - 1])


def cumulative_influence(influence: torch.Tensor, total: float | None = None) -> torch.Tensor:
    """(N,) -> (N,) float32: fraction of the total influence held by the nodes ranked at or above each node.

    This is the "influence" field of circuit-tracer's graph JSON: smaller means more important,
    and the viewer hides nodes above its pruning threshold. `total` defaults to the sum of
    `influence` (pass the unpruned total when scoring the survivors of a pruned graph).
    All-zero influence gives 1.0 everywhere.
    """
    values = influence.detach().to(torch.float64)
    order = torch.sort(values, descending=True, stable=True).indices
    cum = torch.cumsum(values[order], dim=0)
    denominator = float(cum[-1]) if total is None and cum.numel() else (total or 0.0)
    out = torch.ones_like(values)
    if denominator > 0:
        out[order] = (cum / denominator).clamp(max=1.0)
    return out.to(torch.float32)


@dataclass
class PruneResult:
    """Masks over the input graph, and its influence scores."""

    node_mask: torch.Tensor  # (N,) bool
    edge_mask: torch.Tensor  # (nnz,) bool, one per stored edge of the graph (graph.edge_values order)
    influence: torch.Tensor  # (N,) float32 raw influence on the unpruned graph
    cumulative: torch.Tensor  # (N,) float32 cumulative influence score (see cumulative_influence)


def prune_masks(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PruneResult:
    """Compute which nodes and edges survive pruning (see the module docstring), without copying the graph."""
    node_threshold = check_threshold(node_threshold, "node_threshold")
    edge_threshold = check_threshold(edge_threshold, "edge_threshold")
    N = graph.n_nodes
    rows = graph.row_nodes.to(torch.long)  # (R,)
    kind = graph.kind
    w = logit_weights(graph)  # (N,)

    # 1. node influence on the full graph, node mask
    norm = graph.csr.abs_normalized()  # (R, S) sparse; its values are reused in place below
    sources = norm.sources  # (nnz,) int32 source node of each edge
    targets = graph.row_nodes.to(sources.dtype)[norm.row_ids()]  # (nnz,) int32 target node of each edge
    influence = propagate(norm, rows, N, w, node_layer=graph.layer)
    node_mask = influence >= find_threshold(influence, node_threshold)
    node_mask |= (kind == EMBEDDING) | (kind == LOGIT)

    # 2. P̂: drop edges of dead rows and from dead sources, then renormalize
    # (normalizing Â again equals normalizing |P|)
    values = norm.values
    values.masked_fill_(~(node_mask[targets] & node_mask[sources]), 0.0)
    norm.scale_rows_(norm.row_sum(values).clamp_min(_EPS), divide=True)
    pruned_influence = propagate(norm, rows, N, w, node_layer=graph.layer)

    # 3. edge scores E = P̂ · (I_P[t] + w[t]) in place; the threshold counts the non-zero scores only
    norm.scale_rows_(pruned_influence[rows] + w[rows])
    edge_mask = values >= find_threshold(values, edge_threshold)  # (nnz,); zeros never reach the cut
    del norm, values

    # 4. iterate to a fixed point. Scores of dead rows/sources are 0, so edge_mask already avoids them.
    # Keep per-node counts of kept edges and only subtract the edges of nodes that die.
    needs_out = (kind == FEATURE) | (kind == ERROR)
    has_row = torch.zeros(N, dtype=torch.bool)
    has_row[rows] = True
    needs_in = (kind == FEATURE) & has_row  # rowless features: inputs unknown, not absent
    out_count = torch.bincount(sources[edge_mask], minlength=N)
    in_count = torch.bincount(targets[edge_mask], minlength=N)
    while True:
        dead = node_mask & ((needs_in & (in_count == 0)) | (needs_out & (out_count == 0)))
        if not bool(dead.any()):
            break
        node_mask &= ~dead
        cut = edge_mask & (dead[targets] | dead[sources])  # (nnz,) kept edges touching a dying node
        out_count -= torch.bincount(sources[cut], minlength=N)
        in_count -= torch.bincount(targets[cut], minlength=N)
        edge_mask &= ~cut
    return PruneResult(node_mask, edge_mask, influence, cumulative_influence(influence))


def subset_graph(
    graph: Graph,
    node_mask: torch.Tensor,
    edge_mask: torch.Tensor | None = None,
    influence: torch.Tensor | None = None,
) -> Graph:
    """A new Graph with only the nodes in `node_mask` (N,), same order, and the edges in `edge_mask` (nnz,).

    Rows are kept for surviving row nodes; `influence` (N,), if given, is subset into the result.
    Metadata is deep-copied (a `targets` list aligned with the logits is subset with them).
    """
    N, S = graph.n_nodes, graph.n_sources
    if node_mask.shape != (N,):
        raise ValueError(f"node_mask has shape {tuple(node_mask.shape)}, expected ({N},)")
    keep = node_mask.nonzero().squeeze(1)  # (N',) kept node indices, ascending
    rows = graph.row_nodes.to(torch.long)
    keep_rows = node_mask[rows].nonzero().squeeze(1)  # (R',) indices into the rows
    remap = torch.full((N,), -1, dtype=torch.long)
    remap[keep] = torch.arange(keep.numel())

    csr = graph.csr
    keep_edge = node_mask[rows][csr.row_ids()] & node_mask[csr.sources]  # (nnz,)
    if edge_mask is not None:
        if edge_mask.shape != (graph.n_edges,):
            raise ValueError(f"edge_mask has shape {tuple(edge_mask.shape)}, expected ({graph.n_edges},)")
        keep_edge &= edge_mask
    kept = csr.mask_entries(keep_edge)  # rows of dropped nodes are now empty: drop them from indptr only
    indptr = torch.zeros(keep_rows.numel() + 1, dtype=kept.indptr.dtype)
    torch.cumsum(kept.row_counts()[keep_rows], dim=0, out=indptr[1:])
    # every non-logit node precedes the logits, so the kept sources are the first S' kept nodes
    sources = remap.to(kept.sources.dtype)[kept.sources]
    edges = CSR(indptr, sources, kept.values, int((keep < S).sum()))

    is_logit = graph.kind == LOGIT
    logit_keep = node_mask[is_logit].tolist()  # (K,) which logits survive, in target order
    labels = [label for label, kept in zip(graph.logit_labels, logit_keep) if kept]
    metadata = copy.deepcopy(graph.metadata)
    targets = metadata.get("targets")
    if isinstance(targets, list) and len(targets) == len(logit_keep):
        metadata["targets"] = [t for t, kept in zip(targets, logit_keep) if kept]

    return Graph(
        prompt=graph.prompt,
        input_ids=graph.input_ids.clone(),
        tokens=list(graph.tokens),
        n_layers=graph.n_layers,
        kind=graph.kind[keep].clone(),
        layer=graph.layer[keep].clone(),
        position=graph.position[keep].clone(),
        feature=graph.feature[keep].clone(),
        activation=graph.activation[keep].clone(),
        edge_indptr=edges.indptr,
        edge_sources=edges.sources,
        edge_values=edges.values,
        row_nodes=remap[rows[keep_rows]],
        logit_labels=labels,
        metadata=metadata,
        influence=None if influence is None else influence[keep].clone(),
    )


def prune_graph(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Graph:
    """Prune `graph` (see the module docstring) into a new Graph of the surviving nodes and edges.

    The result's `influence` is each kept node's raw influence on the unpruned graph, and
    `metadata["pruning"]` records the thresholds plus `total_influence` (the unpruned total, so
    that exporters can still compute circuit-tracer's cumulative influence scores).
    """
    result = prune_masks(graph, node_threshold, edge_threshold)
    pruned = subset_graph(graph, result.node_mask, result.edge_mask, result.influence)
    pruned.metadata["pruning"] = {
        "node_threshold": float(node_threshold),
        "edge_threshold": float(edge_threshold),
        "total_influence": float(result.influence.to(torch.float64).sum()),
    }
    return pruned
