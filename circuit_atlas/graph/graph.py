"""The attribution graph: nodes, and the direct effect of every source on every target.

Node order (fixed, documented once here):
    1. features   (kind "feature")   sorted by (layer, position, feature index)
    2. errors     (kind "error")     one per (layer, position), layer-major; none at zeroed (BOS) positions
    3. embeddings (kind "embedding") one per position, BOS included
    4. logits     (kind "logit")     in target order

Orientation: `adjacency[target, source]` is the direct effect of `source` on `target`.

Storage is rectangular, because only some nodes have incoming edges: `edges` is
(n_rows, n_sources) float32 where the columns are the first `n_sources` nodes (every
non-logit node; logits are never sources) and `row_nodes[i]` is the node index of row i
(the features whose inputs were computed, then the logits). Error and embedding nodes, and
features left out by `max_feature_nodes`, are source-only: they keep all their outgoing
effects but have no row. `adjacency` expands this to the dense (N, N) view on demand.

Node columns: kind, layer (-1 for embeddings, n_layers for logits), position, feature
(feature index; token id for embeddings and logits, vocab_size + i for custom targets;
-1 for errors), activation (feature activation; probability for logits; 0 otherwise),
id (typed and collision-free: feat:{l}:{p}:{f}, err:{l}:{p}, emb:{p}, logit:{k}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

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


@dataclass
class Graph:
    """An attribution graph (see the module docstring for layout and orientation)."""

    prompt: str
    input_ids: torch.Tensor  # (T,) int64
    tokens: list[str]  # (T,) token strings
    n_layers: int
    kind: torch.Tensor  # (N,) int8, codes into KINDS
    layer: torch.Tensor  # (N,) int64
    position: torch.Tensor  # (N,) int64
    feature: torch.Tensor  # (N,) int64
    activation: torch.Tensor  # (N,) float32
    edges: torch.Tensor  # (n_rows, n_sources) float32
    row_nodes: torch.Tensor  # (n_rows,) int64 node index of each row
    logit_labels: list[str]  # (K,) label of each logit target
    metadata: dict[str, Any] = field(default_factory=dict)
    influence: torch.Tensor | None = None  # (N,) set on pruned graphs

    def __post_init__(self) -> None:
        N = self.kind.shape[0]
        for name in ("layer", "position", "feature", "activation"):
            if getattr(self, name).shape != (N,):
                raise ValueError(f"node column {name} has {getattr(self, name).shape[0]} rows, expected {N}")
        if self.edges.shape != (self.row_nodes.shape[0], self.n_sources):
            raise ValueError(
                f"edges has shape {tuple(self.edges.shape)}, expected ({self.row_nodes.shape[0]}, {self.n_sources})"
            )
        if len(self.logit_labels) != self.n_logits:
            raise ValueError(f"{len(self.logit_labels)} logit labels for {self.n_logits} logit nodes")

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
    def n_edges(self) -> int:
        return int((self.edges != 0).sum())

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
    def adjacency(self) -> torch.Tensor:
        """Dense (N, N) float32 view: adjacency[target, source]."""
        dense = torch.zeros(self.n_nodes, self.n_nodes, dtype=torch.float32)
        dense[self.row_nodes, : self.n_sources] = self.edges.float()
        return dense

    def edge_list(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every nonzero edge as (targets, sources, weights): node indices (int64) and float32
        direct effects, sorted by target node then source node. The stable sparse read of a graph."""
        rows, sources = torch.nonzero(self.edges, as_tuple=True)
        targets = self.row_nodes[rows]
        weights = self.edges[rows, sources].float()
        order = torch.argsort(targets * self.n_nodes + sources)
        return targets[order], sources[order], weights[order]

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
