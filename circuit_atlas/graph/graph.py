"""The attribution graph: nodes, and the direct effect of every source on every target.

Node order (fixed, documented once here):
    1. features   (kind "feature")   sorted by (layer, position, feature index)
    2. errors     (kind "error")     one per (layer, position), layer-major; none at zeroed (BOS) positions
    3. embeddings (kind "embedding") one per position, BOS included
    4. logits     (kind "logit")     in target order

Orientation: `adjacency[target, source]` is the direct effect of `source` on `target`.

Storage is sparse and rectangular, because only some nodes have incoming edges and each
row only reaches its causal cone. Edges are CSR over rows (graph/sparse.py):

    edge_indptr   (n_rows + 1,) int64    row i's edges are [edge_indptr[i], edge_indptr[i+1])
    edge_sources  (nnz,) int32           source node of each edge, strictly increasing per row
    edge_values   (nnz,) float32         its direct effect (only non-zero effects are stored)
    row_nodes     (n_rows,) int64        node index of row i (the features whose inputs were
                                         computed, then the logits)

Sources are the first `n_sources` nodes (every non-logit node; logits are never sources).
Error and embedding nodes, and features left out by `max_feature_nodes`, are source-only:
they keep all their outgoing effects but have no row. Reads: `edge_list()` (the sparse
read), `csr` (the triple as a CSR), and two explicit dense exports, `adjacency` (N, N) and
`dense_rows(...)` (rows x n_sources), for small graphs and tests only. Callers holding dense
rows may pass `edges=` (n_rows, n_sources) to the constructor instead of the CSR triple.

Node columns: kind, layer (-1 for embeddings, n_layers for logits), position, feature
(feature index; token id for embeddings and logits, vocab_size + i for custom targets;
-1 for errors), activation (feature activation; probability for logits; 0 otherwise),
id (typed and collision-free: feat:{l}:{p}:{f}, err:{l}:{p}, emb:{p}, logit:{k}).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from .sparse import CSR, INDEX_DTYPE, INDPTR_DTYPE, check_csr

KINDS = ("feature", "error", "embedding", "logit")
FEATURE, ERROR, EMBEDDING, LOGIT = range(4)


def node_id(kind: int, layer: int, position: int, feature: int, logit_index: int = 0) -> str:
    if kind == FEATURE:
        return f"feat:{layer}:{position}:{feature}"
    if kind == ERROR:
        return f"err:{layer}:{position}"
    if kind == EMBEDDING:
        return f"emb:{position}"
    return f"logit:{logit_index}"


class Graph:
    """An attribution graph (see the module docstring for layout and orientation)."""

    def __init__(
        self,
        *,
        prompt: str,
        input_ids: torch.Tensor,  # (T,) int64
        tokens: list[str],  # (T,) token strings
        n_layers: int,
        kind: torch.Tensor,  # (N,) int8, codes into KINDS
        layer: torch.Tensor,  # (N,) int64
        position: torch.Tensor,  # (N,) int64
        feature: torch.Tensor,  # (N,) int64
        activation: torch.Tensor,  # (N,) float32
        row_nodes: torch.Tensor,  # (n_rows,) int64 node index of each row
        logit_labels: list[str],  # (K,) label of each logit target
        edge_indptr: torch.Tensor | None = None,  # (n_rows + 1,) int64
        edge_sources: torch.Tensor | None = None,  # (nnz,) int32
        edge_values: torch.Tensor | None = None,  # (nnz,) float32
        edges: torch.Tensor | None = None,  # (n_rows, n_sources) dense alternative to the CSR triple
        metadata: dict[str, Any] | None = None,
        influence: torch.Tensor | None = None,  # (N,) set on pruned graphs
    ) -> None:
        self.prompt = prompt
        self.input_ids = input_ids
        self.tokens = tokens
        self.n_layers = n_layers
        self.kind, self.layer, self.position, self.feature, self.activation = kind, layer, position, feature, activation
        self.row_nodes = row_nodes
        self.logit_labels = logit_labels
        self.metadata = {} if metadata is None else metadata
        self.influence = influence

        N = self.kind.shape[0]
        for name in ("layer", "position", "feature", "activation"):
            if getattr(self, name).shape != (N,):
                raise ValueError(f"node column {name} has {getattr(self, name).shape[0]} rows, expected {N}")
        n_rows = int(row_nodes.shape[0])
        triple = (edge_indptr, edge_sources, edge_values)
        if edges is not None:
            if any(t is not None for t in triple):
                raise ValueError("pass either edges (dense rows) or edge_indptr/edge_sources/edge_values, not both")
            if edges.shape != (n_rows, self.n_sources):
                raise ValueError(f"edges has shape {tuple(edges.shape)}, expected ({n_rows}, {self.n_sources})")
            csr = CSR.from_dense(edges)
            edge_indptr, edge_sources, edge_values = csr.indptr, csr.sources, csr.values
        elif any(t is None for t in triple):
            raise ValueError("a Graph needs its edges: edge_indptr, edge_sources and edge_values (or dense edges=)")
        edge_indptr = torch.as_tensor(edge_indptr, dtype=INDPTR_DTYPE)
        edge_sources = torch.as_tensor(edge_sources, dtype=INDEX_DTYPE)
        edge_values = torch.as_tensor(edge_values, dtype=torch.float32)
        check_csr(edge_indptr, edge_sources, edge_values, n_rows, self.n_sources)
        if bool((edge_values == 0).any()):  # store non-zero effects only, so nnz == n_edges
            csr = CSR(edge_indptr, edge_sources, edge_values, self.n_sources).mask_entries(edge_values != 0)
            edge_indptr, edge_sources, edge_values = csr.indptr, csr.sources, csr.values
        self.edge_indptr, self.edge_sources, self.edge_values = edge_indptr, edge_sources, edge_values
        if len(self.logit_labels) != self.n_logits:
            raise ValueError(f"{len(self.logit_labels)} logit labels for {self.n_logits} logit nodes")

    def __repr__(self) -> str:
        return (
            f"Graph(prompt={self.prompt!r}, nodes={self.n_nodes}, rows={self.n_rows}, edges={self.n_edges}, "
            f"logits={self.logit_labels!r})"
        )

    @property
    def edges(self):
        raise AttributeError(
            "Graph.edges (dense rows x sources) is gone: edges are sparse. Read graph.edge_list(), graph.csr, "
            "or the explicit dense exports graph.adjacency / graph.dense_rows()"
        )

    # --- sizes -------------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return int(self.kind.shape[0])

    @property
    def n_logits(self) -> int:
        return int((self.kind == LOGIT).sum())

    @property
    def n_sources(self) -> int:
        return self.n_nodes - self.n_logits

    def count(self, kind: str) -> int:
        return int((self.kind == KINDS.index(kind)).sum())

    @property
    def n_rows(self) -> int:
        return int(self.row_nodes.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_values.shape[0])  # only non-zero effects are stored

    # --- views -------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        out = []
        logit_index = 0
        for k, l, p, f in zip(self.kind.tolist(), self.layer.tolist(), self.position.tolist(), self.feature.tolist()):
            out.append(node_id(k, l, p, f, logit_index))
            logit_index += k == LOGIT
        return out

    @property
    def nodes(self) -> pd.DataFrame:
        """One row per node: kind, layer, position, feature, activation, id (and influence if pruned)."""
        table = {
            "kind": [KINDS[k] for k in self.kind.tolist()],
            "layer": self.layer.numpy(),
            "position": self.position.numpy(),
            "feature": self.feature.numpy(),
            "activation": self.activation.numpy(),
            "id": self.ids,
        }
        if self.influence is not None:
            table["influence"] = self.influence.numpy()
        return pd.DataFrame(table)

    @property
    def csr(self) -> CSR:
        """The edges as a CSR (n_rows, n_sources) over the rows (shares the graph's tensors)."""
        return CSR(self.edge_indptr, self.edge_sources, self.edge_values, self.n_sources)

    @property
    def adjacency(self) -> torch.Tensor:
        """Explicit dense export, (N, N) float32: adjacency[target, source]. N² memory: small graphs only."""
        dense = torch.zeros(self.n_nodes, self.n_nodes, dtype=torch.float32)
        rows = self.row_nodes.long()[self.csr.row_ids().long()]
        dense[rows, self.edge_sources.long()] = self.edge_values
        return dense

    def dense_rows(self, index: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """Explicit dense export of rows `index` (default all), (len(index), n_sources) float32."""
        csr = self.csr if index is None else self.csr.take_rows(torch.as_tensor(index, dtype=torch.long))
        return csr.to_dense()

    def row_of(self, node: int) -> int | None:
        """The row index holding node `node`'s inputs, or None for a source-only node."""
        hit = (self.row_nodes == node).nonzero()
        return int(hit[0, 0]) if hit.numel() else None

    def edge_list(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every nonzero edge as (targets, sources, weights): node indices (int64) and float32
        direct effects, sorted by target node then source node. The stable sparse read of a graph."""
        targets = self.row_nodes.long()[self.csr.row_ids().long()]
        sources = self.edge_sources.long()
        weights = self.edge_values.clone()
        rows = self.row_nodes
        if rows.numel() > 1 and not bool((rows[1:] > rows[:-1]).all()):  # rows out of node order
            order = torch.argsort(targets, stable=True)  # sources already ascend within each row
            return targets[order], sources[order], weights[order]
        return targets, sources, weights

    @property
    def logit_token_ids(self) -> np.ndarray:
        return self.feature[self.kind == LOGIT].numpy()

    @property
    def logit_probabilities(self) -> np.ndarray:
        return self.activation[self.kind == LOGIT].numpy()

    def index_of(self, node: str) -> int:
        """Node index of a typed id such as 'feat:3:5:120'."""
        try:
            return self.ids.index(node)
        except ValueError:
            raise KeyError(f"no node {node!r} in this graph") from None

    # --- operations (implemented in sibling modules) -----------------------------------
    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Graph:
        from .prune import prune_graph

        return prune_graph(self, node_threshold=node_threshold, edge_threshold=edge_threshold)

    def scores(self) -> dict[str, float]:
        """{'replacement': ..., 'completeness': ...} on this graph (see graph/influence.py)."""
        from .influence import graph_scores

        return graph_scores(self)

    def save(self, path: str) -> None:
        from .io import save_graph

        save_graph(self, path)

    @classmethod
    def load(cls, path: str) -> Graph:
        from .io import load_graph

        return load_graph(path)

    def to_json(self, slug: str, **kwargs: Any) -> dict[str, Any]:
        """circuit-tracer/Neuronpedia graph JSON (pruned unless prune=False; see graph/export.py)."""
        from .export import to_circuit_tracer_json

        return to_circuit_tracer_json(self, slug, **kwargs)

    @classmethod
    def from_json(cls, source: Any) -> Graph:
        """Read circuit-tracer / Neuronpedia / Anthropic graph JSON (a path or a parsed dict)."""
        from .json_import import from_circuit_tracer_json

        return from_circuit_tracer_json(source)

    @classmethod
    def from_circuit_tracer_pt(cls, path: str) -> Graph:
        """Read circuit-tracer's pickled `.pt` graph without executing code (see graph/legacy.py)."""
        from .legacy import load_circuit_tracer_pt

        return load_circuit_tracer_pt(path)
