import math

import pytest
import torch

from circuit_atlas.graph.prune import cumulative_influence, find_threshold, prune_graph, prune_masks


def _sorted_threshold(scores, threshold):
    """The plain definition: sort, one float64 cumsum, first index whose share reaches the threshold."""
    ordered = torch.sort(scores, descending=True).values
    cum = torch.cumsum(ordered, 0, dtype=torch.float64)
    if not float(cum[-1]) > 0:
        return math.inf
    i = int(torch.searchsorted(cum / cum[-1], torch.tensor([threshold], dtype=torch.float64)))
    return float(ordered[min(i, len(ordered) - 1)])


@pytest.mark.parametrize("block", [1 << 20, 7, 1])
def test_find_threshold_in_blocks_equals_the_sorted_definition(monkeypatch, block):
    import circuit_atlas.graph.prune as prune

    monkeypatch.setattr(prune, "_BLOCK", block)
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(1000, generator=gen) ** 4 * (torch.rand(1000, generator=gen) < 0.7)
    for threshold in (0.1, 0.5, 0.8, 0.98, 0.999999, 1.0):
        assert find_threshold(scores, threshold) == _sorted_threshold(scores, threshold), threshold
    assert find_threshold(scores, 0.5) == find_threshold(scores[scores > 0], 0.5)  # zeros change nothing


def test_find_threshold():
    scores = torch.tensor([1.0, 4.0, 2.0, 3.0])  # sorted 4 3 2 1, shares .4 .7 .9 1.0
    assert find_threshold(scores, 0.4) == 4.0
    assert find_threshold(scores, 0.5) == 3.0
    assert find_threshold(scores, 0.95) == 1.0
    assert find_threshold(scores, 1.0) == 1.0
    assert find_threshold(torch.tensor([]), 0.5) == math.inf
    assert find_threshold(torch.zeros(3), 0.5) == math.inf


def test_cumulative_influence():
    # ranks: 3 (node 1), 2 (node 3), 1 (node 0), 0 (node 2); total 6
    out = cumulative_influence(torch.tensor([1.0, 3.0, 0.0, 2.0]))
    assert out.tolist() == pytest.approx([1.0, 0.5, 1.0, 5 / 6])
    assert cumulative_influence(torch.tensor([1.0, 3.0]), total=8.0).tolist() == pytest.approx([0.5, 0.375])
    assert cumulative_influence(torch.zeros(2)).tolist() == [1.0, 1.0]


# Node influence of the conftest DAG (see test_influence.py):
#   f2 .3 > emb2 .2875 > f1 .25 > emb1 .23125 > f0 .225 > err(1,2) .15 > err(0,2) .075 > emb0 .05625 > 0 ...
#   total 1.575; cumulative shares .1905 .3730 .5317 .6786 .8214 ... so node_threshold 0.8 keeps
#   f2, emb2, f1, emb1, f0; emb0 and the logits are forced; all four errors go.
# On the node-pruned graph P (err columns removed): f2 <- f0 1/3, f1 2/3;  L0 <- f2 2/3, f0 1/3.
#   I_P: f0 = .2 + .4/3 = 1/3, f1 = .1 + .8/3 = 11/30, f2 = .4.
# Edge scores P̂[t,s]·(I_P[t] + w[t]), sorted (total 1.9):
#   L0<-f2 .4, f1<-emb2 .275, f2<-f1 .2667, f0<-emb1 .25, L0<-f0 .2, f2<-f0 .1333,
#   L1<-f1 .1, L1<-emb2 .1, f1<-emb1 .0917, f0<-emb0 .0833
#   cumulative shares: .2105 .3553 .4956 .6272 .7325 .8026 .8553 .9079 .9561 1.0
INFLUENCE = [0.225, 0.25, 0.3, 0.0, 0.075, 0.0, 0.15, 0.05625, 0.23125, 0.2875, 0.0, 0.0]


def _edges_by_id(g):
    ids = g.ids
    return {
        (ids[t], ids[s]): w for (t, s), w in zip(g.adjacency.nonzero().tolist(), g.adjacency[g.adjacency != 0].tolist())
    }


def test_prune_hand_dag(dag):
    # edge_threshold 0.9: the cut lands on the tied .1 scores (share .9079) -> keep everything >= .1
    p = prune_graph(dag, node_threshold=0.8, edge_threshold=0.9)
    assert p.ids == ["feat:0:1:3", "feat:0:2:5", "feat:1:2:7", "emb:0", "emb:1", "emb:2", "logit:0", "logit:1"]
    assert _edges_by_id(p) == {
        ("feat:0:1:3", "emb:1"): 3.0, ("feat:0:2:5", "emb:2"): 3.0,
        ("feat:1:2:7", "feat:0:1:3"): 1.0, ("feat:1:2:7", "feat:0:2:5"): -2.0,
        ("logit:0", "feat:1:2:7"): 4.0, ("logit:0", "feat:0:1:3"): 2.0,
        ("logit:1", "feat:0:2:5"): 1.0, ("logit:1", "emb:2"): 1.0,
    }  # fmt: skip
    assert p.influence.tolist() == pytest.approx([0.225, 0.25, 0.3, 0.05625, 0.23125, 0.2875, 0.0, 0.0], abs=1e-6)
    assert p.metadata["pruning"]["node_threshold"] == 0.8 and p.metadata["pruning"]["edge_threshold"] == 0.9
    assert p.metadata["pruning"]["total_influence"] == pytest.approx(1.575)
    assert p.row_nodes.tolist() == [0, 1, 2, 6, 7] and p.logit_labels == [" c", " d"]
    assert p.activation.tolist() == pytest.approx([1.5, 2.5, 0.5, 0, 0, 0, 0.6, 0.2])
    assert dag.prune(node_threshold=0.8, edge_threshold=0.9).ids == p.ids


def test_feature_without_kept_outgoing_edge_is_dropped(dag):
    # edge_threshold 0.5 keeps the 4 best edges (share .6272): L0<-f2, f1<-emb2, f2<-f1, f0<-emb1.
    # f0 then has no kept outgoing edge (f2<-f0 and L0<-f0 are gone): f0 and its input edge go.
    p = prune_graph(dag, node_threshold=0.8, edge_threshold=0.5)
    assert p.ids == ["feat:0:2:5", "feat:1:2:7", "emb:0", "emb:1", "emb:2", "logit:0", "logit:1"]
    assert _edges_by_id(p) == {
        ("logit:0", "feat:1:2:7"): 4.0,
        ("feat:0:2:5", "emb:2"): 3.0,
        ("feat:1:2:7", "feat:0:2:5"): -2.0,
    }


def test_pruning_cascades_until_stable(dag):
    # edge_threshold 0.3 keeps L0<-f2 and f1<-emb2 (share .3553). Round 1: f2 has no kept input,
    # f0 and f1 no kept output -> dropped. Round 2: L0<-f2 and f1<-emb2 are cleared. Nothing is left
    # but the always-kept embeddings and logits.
    masks = prune_masks(dag, node_threshold=0.8, edge_threshold=0.3)
    assert masks.node_mask.nonzero().flatten().tolist() == [7, 8, 9, 10, 11]
    assert not masks.edge_mask.any()
    assert masks.influence.tolist() == pytest.approx(INFLUENCE, abs=1e-6)
    assert masks.cumulative[2].item() == pytest.approx(0.3 / 1.575)


def test_thresholds_of_one_keep_every_influential_node_and_edge(dag):
    p = prune_graph(dag, node_threshold=1.0, edge_threshold=1.0)
    # errors without influence (err(0,1), err(1,1)) go; err(0,2) and err(1,2) are pruned like features but kept here
    assert p.ids == [i for i in dag.ids if i not in ("err:0:1", "err:1:1")]
    assert p.n_edges == dag.n_edges


def test_rowless_feature_needs_no_incoming_edge(graph_builder):
    # f0 was never expanded (no row): its unknown inputs must not get it pruned
    nodes = [("feature", 0, 1, 0, 1.0), ("feature", 1, 1, 1, 1.0), ("embedding", -1, 0, 0, 0),
             ("embedding", -1, 1, 1, 0), ("logit", 2, 1, 5, 1.0)]  # fmt: skip
    edges = {(1, 0): 2.0, (1, 3): 1.0, (4, 1): 1.0}
    g = graph_builder(nodes, edges, n_layers=2, tokens=["<bos>", "x"], rows=[1, 4])
    p = prune_graph(g, node_threshold=0.9, edge_threshold=0.99)
    assert p.ids == ["feat:0:1:0", "feat:1:1:1", "emb:0", "emb:1", "logit:0"]
    assert p.n_edges == 3


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, math.nan, True, "0.5", None])
@pytest.mark.parametrize("name", ["node_threshold", "edge_threshold"])
def test_bad_thresholds_raise_naming_the_argument(dag, bad, name):
    with pytest.raises(ValueError, match=name):
        prune_graph(dag, **{name: bad})
