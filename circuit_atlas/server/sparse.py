"""Sparse graph math for the server: influence, pruning, scores and supernode edges on an edge list.

The server never builds an N x N matrix: a graph is read once through `Graph.edge_list()` into
three arrays t, s, w (target node, source node, signed weight; E edges, sorted by target) and
everything below is a scatter-add over those E edges. With

    Â[t, s] = |w| / max(Σ_s' |w(t, s')|, 1e-10)         (E,)  each edge's share of its target's input
    I       = wₗᵀ (Â + Â² + …)                          (N,)  influence on the probability-weighted logits

the definitions (pruning recipe, replacement, completeness) are those of circuit_atlas/graph/
prune.py and influence.py, re-written for edge lists so a 10k-node graph with millions of edges
fits and a view query costs O(E).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from circuit_atlas.graph.graph import EMBEDDING, ERROR, FEATURE, LOGIT, Graph

_EPS = 1e-10


@dataclass
class SparseGraph:
    n: int
    kind: np.ndarray  # (N,) int8
    layer: np.ndarray  # (N,) int64
    position: np.ndarray  # (N,) int64
    feature: np.ndarray  # (N,) int64
    activation: np.ndarray  # (N,) float32
    has_row: np.ndarray  # (N,) bool: the node's inputs were computed
    t: np.ndarray  # (E,) int64 target node, sorted
    s: np.ndarray  # (E,) int64 source node
    w: np.ndarray  # (E,) float32 signed direct effect
    in_abs: np.ndarray  # (N,) float64 Σ |w| over each node's inputs
    in_ptr: np.ndarray  # (N+1,) edges of target i are [in_ptr[i], in_ptr[i+1])
    out_order: np.ndarray  # (E,) edge indices sorted by source
    out_ptr: np.ndarray  # (N+1,) out_order[out_ptr[i]:out_ptr[i+1]] are node i's outgoing edges
    logit_w: np.ndarray  # (N,) float64 probability on logit nodes, 0 elsewhere

    @classmethod
    def from_graph(cls, graph: Graph) -> SparseGraph:
        t, s, w = (x.numpy() for x in graph.edge_list())
        n = graph.n_nodes
        kind = graph.kind.numpy().astype(np.int8)
        has_row = np.zeros(n, dtype=bool)
        has_row[graph.row_nodes.numpy()] = True
        in_abs = np.bincount(t, weights=np.abs(w).astype(np.float64), minlength=n)
        in_ptr = np.searchsorted(t, np.arange(n + 1))
        out_order = np.argsort(s, kind="stable")
        out_ptr = np.searchsorted(s[out_order], np.arange(n + 1))
        logit_w = np.where(kind == LOGIT, graph.activation.numpy().astype(np.float64), 0.0)
        return cls(n, kind, graph.layer.numpy(), graph.position.numpy(), graph.feature.numpy(),
                   graph.activation.numpy(), has_row, t.astype(np.int64), s.astype(np.int64), w, in_abs,
                   in_ptr, out_order, out_ptr, logit_w)  # fmt: skip

    @property
    def norm(self) -> np.ndarray:
        """Â per edge (E,)."""
        return np.abs(self.w) / np.maximum(self.in_abs[self.t], _EPS)

    def propagate(self, norm: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """wᵀ(Â + Â² + …) for per-edge weights `norm` (E,). Returns (N,) float64.
        Mass moves one edge back per step; the graph is a DAG, so it vanishes within N + 1 steps."""
        v = self.logit_w if weights is None else weights
        influence = np.zeros(self.n)
        for _ in range(self.n + 1):
            if not v[self.t].any():
                return influence
            v = np.bincount(self.s, weights=norm * v[self.t], minlength=self.n)  # (N,)
            influence += v
        raise RuntimeError("influence did not vanish: the edges contain a cycle, so this is not an attribution DAG")

    def influence(self) -> np.ndarray:
        return self.propagate(self.norm)


def find_threshold(scores: np.ndarray, threshold: float) -> float:
    """Smallest score of the shortest descending prefix holding `threshold` of the total (+inf if no mass)."""
    if scores.size == 0:
        return math.inf
    ordered = np.sort(scores)[::-1]
    cum = np.cumsum(ordered, dtype=np.float64)
    if not cum[-1] > 0:
        return math.inf
    i = int(np.searchsorted(cum / cum[-1], threshold))
    return float(ordered[min(i, ordered.size - 1)])


def cumulative(influence: np.ndarray) -> np.ndarray:
    """(N,) share of the total influence held by nodes ranked at or above each node (circuit-tracer's "influence")."""
    order = np.argsort(-influence, kind="stable")
    cum = np.cumsum(influence[order])
    out = np.ones(influence.size)
    if cum.size and cum[-1] > 0:
        out[order] = np.minimum(cum / cum[-1], 1.0)
    return out


def prune(g: SparseGraph, influence: np.ndarray, node_threshold: float, edge_threshold: float):
    """(node_mask (N,), edge_mask (E,)): the recipe of graph/prune.py on an edge list."""
    kind = g.kind
    node_mask = influence >= find_threshold(influence, node_threshold)
    node_mask |= (kind == EMBEDDING) | (kind == LOGIT)
    alive = node_mask[g.t] & node_mask[g.s]
    p = np.abs(g.w).astype(np.float64) * alive
    p /= np.maximum(np.bincount(g.t, weights=p, minlength=g.n)[g.t], _EPS)  # P̂: renormalised over kept inputs
    pruned_influence = g.propagate(p)
    score = p * (pruned_influence[g.t] + g.logit_w[g.t])  # (E,)
    edge_mask = score >= find_threshold(score[score > 0], edge_threshold)
    needs_out = (kind == FEATURE) | (kind == ERROR)
    needs_in = (kind == FEATURE) & g.has_row  # rowless features: inputs unknown, not absent
    while True:
        in_count = np.bincount(g.t[edge_mask], minlength=g.n)
        out_count = np.bincount(g.s[edge_mask], minlength=g.n)
        dead = node_mask & ((needs_in & (in_count == 0)) | (needs_out & (out_count == 0)))
        if not dead.any():
            return node_mask, edge_mask
        node_mask &= ~dead
        edge_mask &= node_mask[g.t] & node_mask[g.s]


def scores(g: SparseGraph, error_like: np.ndarray | None = None) -> dict[str, float | None]:
    """Replacement and completeness (graph/influence.py's definitions).

    error_like (N,) bool: nodes that count as unexplained. None = the error nodes (the graph's
    scores). For a pinned subgraph, pass errors + every feature outside the subgraph: their
    inputs are then not followed (they become pure sources) and their share counts as error.
    """
    err = g.kind == ERROR if error_like is None else error_like
    norm = g.norm * ~err[g.t]  # mass stops at error-like nodes
    influence = g.propagate(norm)
    emb = float(influence[g.kind == EMBEDDING].sum())
    errs = float(influence[err].sum())
    replacement = emb / (emb + errs) if emb + errs > 0 else None
    error_share = np.bincount(g.t, weights=norm * err[g.s], minlength=g.n)  # (N,)
    rows = (np.bincount(g.t, weights=norm, minlength=g.n) > 0) & ~err
    mass = (influence + g.logit_w)[rows]
    total = float(mass.sum())
    completeness = float(((1.0 - error_share[rows]) * mass).sum()) / total if total > 0 else None
    return {"replacement": replacement, "completeness": completeness}


def card_edges(g: SparseGraph, card_of: np.ndarray, n_cards: int) -> list[tuple[int, int, float]]:
    """Edges between subgraph cards (frontend.md §3.3). card_of (N,) int: card of each node, -1 if none.

    weight(A → B) = Σ over edges s∈A, t∈B of  w(t, s) / Σ|w(t, s')| over s' outside B  ×  1/|B|
    (1/|B| = each member's share of its group, so a group's input is the mean of its members').
    Parallel edges merge; edges inside a card are dropped. Returns (source card, target card, weight).
    """
    ct, cs = card_of[g.t], card_of[g.s]
    same = ct == cs
    outside = np.bincount(g.t, weights=np.abs(g.w).astype(np.float64) * ~same, minlength=g.n)  # (N,)
    size = np.bincount(card_of[card_of >= 0], minlength=n_cards).astype(np.float64)
    keep = (ct >= 0) & (cs >= 0) & ~same
    if not keep.any():
        return []
    contrib = g.w[keep] / np.maximum(outside[g.t[keep]], _EPS) / size[ct[keep]]
    key = cs[keep] * n_cards + ct[keep]
    uniq, inverse = np.unique(key, return_inverse=True)
    summed = np.bincount(inverse, weights=contrib)
    return [(int(k // n_cards), int(k % n_cards), float(v)) for k, v in zip(uniq, summed)]
