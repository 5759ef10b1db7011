"""Views by query: the pruned node set, a node's top-k edges, subgraph edges and scores.

Loaded graphs (Graph + SparseGraph + NodeTable + influence) are cached per graph id, and each
(node_threshold, edge_threshold) pruning once per loaded graph, so a slider move costs a cache
hit or one O(E) pass. Nothing dense ever goes to the browser.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from circuit_atlas.graph.graph import ERROR, FEATURE, Graph

from .library import graph_path, load_influence
from .nodes import NodeTable
from .sparse import SparseGraph, card_edges, cumulative, prune, scores


@dataclass
class LoadedGraph:
    id: str
    graph: Graph
    sparse: SparseGraph
    nodes: NodeTable
    influence: np.ndarray  # (N,) raw influence on the logits
    cumulative: np.ndarray  # (N,) circuit-tracer's cumulative share (smaller = more important)
    pruned: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def prune(self, node_threshold: float, edge_threshold: float) -> tuple[np.ndarray, np.ndarray]:
        key = (round(node_threshold, 6), round(edge_threshold, 6))
        with self.lock:
            if key not in self.pruned:
                if len(self.pruned) > 64:
                    self.pruned.clear()
                if key == (1.0, 1.0):  # "reveal all": every node and edge, even those with no influence
                    self.pruned[key] = (np.ones(self.sparse.n, dtype=bool), np.ones(self.sparse.t.size, dtype=bool))
                else:
                    self.pruned[key] = prune(self.sparse, self.influence, *key)
            return self.pruned[key]


class GraphCache:
    def __init__(self, data_dir: Path, size: int):
        self.data_dir, self.size = data_dir, size
        self._items: OrderedDict[str, LoadedGraph] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, gid: str, sha: str) -> LoadedGraph:
        with self._lock:
            if gid in self._items:
                self._items.move_to_end(gid)
                return self._items[gid]
            lock = self._loading.setdefault(gid, threading.Lock())
        with lock:  # one load per graph even when many requests arrive at once
            with self._lock:
                if gid in self._items:
                    return self._items[gid]
            loaded = self._load(gid, sha)
            with self._lock:
                self._items[gid] = loaded
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return loaded

    def drop(self, gid: str) -> None:
        with self._lock:
            self._items.pop(gid, None)

    def _load(self, gid: str, sha: str) -> LoadedGraph:
        graph = Graph.load(str(graph_path(self.data_dir, sha)))
        sparse = SparseGraph.from_graph(graph)
        influence = load_influence(self.data_dir, sha)
        if influence is None or influence.shape != (graph.n_nodes,):
            influence = sparse.influence()
        from .dashboards import feature_labels

        nodes = NodeTable(graph, feature_labels(self.data_dir, graph.metadata.get("transcoders")))
        return LoadedGraph(gid, graph, sparse, nodes, influence, cumulative(influence))


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def node_json(lg: LoadedGraph, i: int, labels: dict[int, dict]) -> dict:
    nt = lg.nodes
    label = labels.get(i)
    out = {
        "id": nt.ids[i], "np_id": nt.np_ids[i], "kind": nt.kinds[i], "layer": nt.layer[i], "position": nt.position[i],
        "feature": nt.feature[i] if nt.kinds[i] == "feature" else None, "activation": _num(nt.activation[i]),
        "influence": _num(lg.influence[i]), "cumulative": _num(lg.cumulative[i]), "token": nt.token[i],
        "auto_label": nt.auto_labels[i], "label": label["text"] if label else nt.auto_labels[i],
        "label_scope": label["scope"] if label else "auto",
    }  # fmt: skip
    if nt.kinds[i] == "error" and nt.error_share[i] is not None:
        out["error_share"] = _num(nt.error_share[i])
    if nt.kinds[i] == "logit":
        out["probability"] = _num(nt.activation[i])
        out["logit_token"] = nt.logit_tokens[i]
    return out


def pruned_view(lg: LoadedGraph, node_threshold: float, edge_threshold: float, keep: list[int],
                labels: dict[int, dict]) -> dict:  # fmt: skip
    g = lg.sparse
    node_mask, edge_mask = lg.prune(node_threshold, edge_threshold)
    visible = node_mask.copy()
    kept = np.zeros(g.n, dtype=bool)
    kept[keep] = True
    visible |= kept
    links = edge_mask | ((kept[g.t] | kept[g.s]) & visible[g.t] & visible[g.s])
    idx = np.nonzero(links)[0]
    nt = lg.nodes
    pct = g.w[idx] / np.maximum(g.in_abs[g.t[idx]], 1e-10)
    return {
        "nodes": [node_json(lg, int(i), labels) for i in np.nonzero(visible)[0]],
        "links": [{"source": nt.ids[s], "target": nt.ids[t], "weight": float(w), "pct": float(p)}
                  for s, t, w, p in zip(g.s[idx].tolist(), g.t[idx].tolist(), g.w[idx].tolist(), pct.tolist())],
        "hidden": int(g.n - visible.sum()),
        "n_total": int(g.n),
        "node_threshold": node_threshold,
        "edge_threshold": edge_threshold,
    }  # fmt: skip


def node_edges(lg: LoadedGraph, i: int, direction: str, k: int, labels: dict[int, dict]) -> list[dict]:
    g = lg.sparse
    if direction == "in":
        edges = np.arange(g.in_ptr[i], g.in_ptr[i + 1])
        other = g.s[edges]
    else:
        edges = g.out_order[g.out_ptr[i] : g.out_ptr[i + 1]]
        other = g.t[edges]
    order = np.argsort(-np.abs(g.w[edges]), kind="stable")[:k]
    nt = lg.nodes
    out = []
    for e, j in zip(edges[order].tolist(), other[order].tolist()):
        label = labels.get(j)
        out.append({
            "id": nt.ids[j], "weight": float(g.w[e]), "pct": float(g.w[e] / max(g.in_abs[g.t[e]], 1e-10)),
            "kind": nt.kinds[j], "layer": nt.layer[j], "position": nt.position[j], "token": nt.token[j],
            "label": label["text"] if label else nt.auto_labels[j],
        })  # fmt: skip
    return out


def subgraph(lg: LoadedGraph, pinned: list[int], supernodes: list[tuple[str, list[int]]],
             labels: dict[int, dict], graph_scores: dict) -> dict:  # fmt: skip
    """Cards (pinned nodes outside groups + one per supernode), merged edges and scores."""
    g, nt = lg.sparse, lg.nodes
    card_of = np.full(g.n, -1, dtype=np.int64)
    cards: list[dict] = []
    for name, members in supernodes:
        members = [m for m in dict.fromkeys(members) if card_of[m] < 0]
        if not members:
            continue
        card_of[members] = len(cards)
        cards.append({"id": f"sn:{len(cards)}", "label": name, "members": [nt.ids[m] for m in members],
                      "layer": float(np.mean([nt.layer[m] for m in members])),
                      "position": float(np.mean([nt.position[m] for m in members])), "supernode": True})  # fmt: skip
    for m in dict.fromkeys(pinned):
        if card_of[m] >= 0:
            continue
        card_of[m] = len(cards)
        label = labels.get(m)
        cards.append({"id": nt.ids[m], "label": label["text"] if label else nt.auto_labels[m], "members": [nt.ids[m]],
                      "layer": nt.layer[m], "position": nt.position[m], "supernode": False,
                      "kind": nt.kinds[m]})  # fmt: skip
    edges = [{"source": cards[a]["id"], "target": cards[b]["id"], "weight": w}
             for a, b, w in card_edges(g, card_of, len(cards))]  # fmt: skip
    in_sub = card_of >= 0
    error_like = (g.kind == ERROR) | ((g.kind == FEATURE) & ~in_sub)
    return {"cards": cards, "edges": edges, "scores": {"graph": graph_scores, "subgraph": scores(g, error_like)}}
