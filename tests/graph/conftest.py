"""Small hand-built graphs for the graph tests."""

from __future__ import annotations

import pytest
import torch

from circuit_atlas.graph.graph import KINDS, LOGIT, Graph


def build_graph(nodes, edges, *, n_layers, tokens, input_ids=None, labels=None, rows=None, metadata=None) -> Graph:
    """nodes: [(kind, layer, position, feature, activation)] in node order; edges: {(target, source): weight}.

    Rows default to every feature and logit node (the nodes whose inputs attribution computes).
    """
    kind = [KINDS.index(n[0]) for n in nodes]
    n_sources = sum(k != LOGIT for k in kind)
    if rows is None:
        rows = [i for i, n in enumerate(nodes) if n[0] in ("feature", "logit")]
    dense = torch.zeros(len(rows), n_sources)
    for (t, s), w in edges.items():
        dense[rows.index(t), s] = w
    n_logits = kind.count(LOGIT)
    return Graph(
        prompt="".join(tokens),
        input_ids=torch.tensor(input_ids if input_ids is not None else list(range(len(tokens))), dtype=torch.long),
        tokens=list(tokens),
        n_layers=n_layers,
        kind=torch.tensor(kind, dtype=torch.int8),
        layer=torch.tensor([n[1] for n in nodes], dtype=torch.long),
        position=torch.tensor([n[2] for n in nodes], dtype=torch.long),
        feature=torch.tensor([n[3] for n in nodes], dtype=torch.long),
        activation=torch.tensor([float(n[4]) for n in nodes], dtype=torch.float32),
        edges=dense,
        row_nodes=torch.tensor(rows, dtype=torch.long),
        logit_labels=labels if labels is not None else [f"tok{i}" for i in range(n_logits)],
        metadata=metadata if metadata is not None else {},
    )


# The hand-built DAG used across the tests (2 layers, tokens <bos> a b, 12 nodes):
#   0 f0 = feature (layer 0, pos 1, #3)    4 err (0, 2)    8 emb 1     10 L0  p = 0.6
#   1 f1 = feature (layer 0, pos 2, #5)    5 err (1, 1)    9 emb 2     11 L1  p = 0.2
#   2 f2 = feature (layer 1, pos 2, #7)    6 err (1, 2)
#   3 err (0, 1)                           7 emb 0
# Edges (target <- source: weight), rows are f0, f1, f2, L0, L1:
#   f0 <- emb1: 3,  emb0: -1
#   f1 <- emb2: 3,  emb1: -1
#   f2 <- f0: 1,    f1: -2,    err(0,2): 1
#   L0 <- f2: 4,    err(1,2): -2,   f0: 2
#   L1 <- f1: 1,    emb2: 1
DAG_NODES = [
    ("feature", 0, 1, 3, 1.5), ("feature", 0, 2, 5, 2.5), ("feature", 1, 2, 7, 0.5),
    ("error", 0, 1, -1, 0), ("error", 0, 2, -1, 0), ("error", 1, 1, -1, 0), ("error", 1, 2, -1, 0),
    ("embedding", -1, 0, 2, 0), ("embedding", -1, 1, 40, 0), ("embedding", -1, 2, 41, 0),
    ("logit", 2, 2, 11, 0.6), ("logit", 2, 2, 12, 0.2),
]  # fmt: skip
DAG_EDGES = {
    (0, 8): 3.0, (0, 7): -1.0,
    (1, 9): 3.0, (1, 8): -1.0,
    (2, 0): 1.0, (2, 1): -2.0, (2, 4): 1.0,
    (10, 2): 4.0, (10, 6): -2.0, (10, 0): 2.0,
    (11, 1): 1.0, (11, 9): 1.0,
}  # fmt: skip


def make_dag(**kwargs) -> Graph:
    return build_graph(DAG_NODES, DAG_EDGES, n_layers=2, tokens=["<bos>", " a", " b"], input_ids=[2, 40, 41],
                       labels=[" c", " d"], **kwargs)  # fmt: skip


@pytest.fixture
def dag() -> Graph:
    return make_dag()


@pytest.fixture
def graph_builder():
    return build_graph
