import math

import pytest
import torch

from circuit_atlas.graph.influence import graph_scores, logit_weights, node_influence, normalized_abs


def test_normalized_abs_rows_sum_to_one_and_zero_rows_stay_zero():
    edges = torch.tensor([[3.0, -1.0, 0.0], [0.0, 0.0, 0.0], [-2.0, 2.0, 4.0]])
    norm = normalized_abs(edges)
    assert torch.allclose(norm, torch.tensor([[0.75, 0.25, 0.0], [0.0, 0.0, 0.0], [0.25, 0.25, 0.5]]))
    assert edges[0, 1] == -1.0  # input untouched


def test_logit_weights_are_the_logit_probabilities(dag):
    w = logit_weights(dag)
    assert w.tolist()[:10] == [0.0] * 10
    assert w[10].item() == pytest.approx(0.6) and w[11].item() == pytest.approx(0.2)


# Hand derivation on the DAG of conftest.py (Â = |A| row-normalized; w = 0.6 on L0, 0.2 on L1):
#   step 1, from the logits:  L0 .6 -> f2 .3, err(1,2) .15, f0 .15;   L1 .2 -> f1 .1, emb2 .1
#   step 2, rows f0 .15, f1 .1, f2 .3:
#       f0 -> emb1 .1125, emb0 .0375;  f1 -> emb2 .075, emb1 .025;  f2 -> f0 .075, f1 .15, err(0,2) .075
#   step 3, rows f0 .075, f1 .15:  f0 -> emb1 .05625, emb0 .01875;  f1 -> emb2 .1125, emb1 .0375
#   step 4: no mass on rows -> stop.
#   f0 = .15 + .075 = .225, f1 = .1 + .15 = .25, f2 = .3, err(0,2) = .075, err(1,2) = .15,
#   emb0 = .0375 + .01875 = .05625, emb1 = .1125 + .025 + .05625 + .0375 = .23125,
#   emb2 = .1 + .075 + .1125 = .2875; unreachable errors and the logits get 0.
#   Check: errors + embeddings = .225 + .575 = .8 = Σ w (all mass ends at pure sources).
DAG_INFLUENCE = [0.225, 0.25, 0.3, 0.0, 0.075, 0.0, 0.15, 0.05625, 0.23125, 0.2875, 0.0, 0.0]


def test_node_influence_hand_dag(dag):
    I = node_influence(dag.csr, dag.row_nodes, dag.n_nodes, logit_weights(dag))
    assert I.shape == (12,) and I.dtype == torch.float32
    assert I.tolist() == pytest.approx(DAG_INFLUENCE, abs=1e-6)


def test_absent_rows_act_as_pure_sources(dag):
    # only the logit rows were computed: influence stops after one step
    keep = torch.tensor([3, 4])  # rows of L0, L1
    I = node_influence(dag.csr.take_rows(keep), dag.row_nodes[keep], dag.n_nodes, logit_weights(dag))
    expected = [0.15, 0.1, 0.3, 0.0, 0.0, 0.0, 0.15, 0.0, 0.0, 0.1, 0.0, 0.0]
    assert I.tolist() == pytest.approx(expected, abs=1e-6)


def test_matches_closed_form_on_a_random_dag():
    # I = wᵀ((1 - Â)^-1 - 1) on a dense random DAG (targets only read from lower indices)
    gen = torch.Generator().manual_seed(0)
    n = 60
    A = torch.randn(n, n, generator=gen).tril(-1) * (torch.rand(n, n, generator=gen) < 0.4)
    rows = torch.arange(10, n)  # the first 10 nodes are pure sources
    w = torch.zeros(n)
    w[-3:] = torch.tensor([0.5, 0.3, 0.1])
    I = node_influence(A[rows, : n - 3], rows, n, w)  # the last 3 nodes are never sources
    norm = torch.zeros(n, n, dtype=torch.float64)
    norm[rows, : n - 3] = normalized_abs(A[rows, : n - 3]).double()
    closed = w.double() @ (
        torch.linalg.inv(torch.eye(n, dtype=torch.float64) - norm) - torch.eye(n, dtype=torch.float64)
    )
    assert torch.allclose(I.double(), closed, atol=1e-5)


def test_cycle_raises_naming_the_cap():
    edges = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # node 0 <- node 1 <- node 0
    with pytest.raises(RuntimeError, match="iterations"):
        node_influence(edges, torch.tensor([0, 1]), 2, torch.tensor([1.0, 0.0]))


def test_bad_shapes_raise_value_error(dag):
    with pytest.raises(ValueError, match="weights"):
        node_influence(dag.csr, dag.row_nodes, dag.n_nodes, torch.zeros(3))
    with pytest.raises(ValueError, match="row_nodes"):
        node_influence(dag.csr, dag.row_nodes[:2], dag.n_nodes, logit_weights(dag))


def test_scores_hand_dag(dag):
    # replacement = Σ emb I / (Σ emb I + Σ err I) = .575 / (.575 + .225) = .71875
    # completeness over the rows f0, f1, f2, L0, L1 with error shares 0, 0, 1/4, 1/4, 0 and
    # I + w = .225, .25, .3, .6, .2 (sum 1.575):
    #   (.225 + .25 + .75*.3 + .75*.6 + .2) / 1.575 = 1.35 / 1.575 = 6/7
    # (circuit-tracer would also count err(0,2), err(1,2) and the embeddings as fully explained:
    #  2.15 / 2.375 = 0.905.)
    scores = graph_scores(dag)
    assert scores["replacement"] == pytest.approx(0.71875, abs=1e-6)
    assert scores["completeness"] == pytest.approx(6 / 7, abs=1e-6)
    assert dag.scores() == scores


def test_completeness_ignores_source_only_rows(graph_builder):
    # f (layer 0, pos 1) <- emb1: 1;  L <- err(0,1): w_err, f: 1;  p(L) = 1.
    # I: err = w_err/(w_err+1), f = emb1 = 1/(w_err+1). Rows: f (error share 0), L (share w_err/(w_err+1)).
    # completeness = (1·I_f + (1 - share)·1) / (I_f + 1) = 2/(w_err+1) / ((w_err+2)/(w_err+1)) = 2/(w_err+2)
    # The error node's large influence must not count as "explained" (circuit-tracer: 1.2/2.1 for w_err=9).
    nodes = [("feature", 0, 1, 0, 1.0), ("error", 0, 1, -1, 0), ("embedding", -1, 0, 0, 0),
             ("embedding", -1, 1, 1, 0), ("logit", 1, 1, 5, 1.0)]  # fmt: skip
    results = []
    for w_err in (9.0, 99.0):
        g = graph_builder(nodes, {(0, 3): 1.0, (4, 1): w_err, (4, 0): 1.0}, n_layers=1, tokens=["<bos>", "x"])
        scores = graph_scores(g)
        assert scores["completeness"] == pytest.approx(2 / (w_err + 2), abs=1e-6)
        assert scores["replacement"] == pytest.approx(1 / (w_err + 1), abs=1e-6)
        results.append(scores["completeness"])
    assert results[1] < results[0] < 0.2


def test_scores_of_a_graph_without_edges_are_nan(graph_builder):
    g = graph_builder([("embedding", -1, 0, 0, 0), ("logit", 1, 0, 5, 1.0)], {}, n_layers=1, tokens=["x"])
    scores = graph_scores(g)
    assert math.isnan(scores["replacement"]) and math.isnan(scores["completeness"])


def test_layer_ordered_pass_equals_the_path_length_sum(dag):
    """Given the nodes' layers, influence is one pass over the edges (top layer down), with the same result."""
    from circuit_atlas.graph.influence import _propagate_by_layer, propagate

    w = logit_weights(dag)
    norm = dag.csr.abs_normalized()
    fast = _propagate_by_layer(norm, dag.row_nodes, dag.n_nodes, w, dag.layer)
    assert fast is not None  # the hand DAG's edges all go up the layers: the one-pass order holds
    assert fast.tolist() == pytest.approx(DAG_INFLUENCE, abs=1e-6)
    assert propagate(norm, dag.row_nodes, dag.n_nodes, w, node_layer=dag.layer).tolist() == fast.tolist()


def test_layers_that_do_not_order_the_edges_fall_back_to_the_exact_sum(dag):
    """Wrong layers (an edge within one layer, or going down) cannot give a wrong influence."""
    from circuit_atlas.graph.influence import _propagate_by_layer

    w = logit_weights(dag)
    norm = dag.csr.abs_normalized()
    flat = torch.zeros_like(dag.layer)  # f2 <- f0, f1 now sit in one layer: the one-pass order breaks
    assert _propagate_by_layer(norm, dag.row_nodes, dag.n_nodes, w, flat) is None
    I = node_influence(dag.csr, dag.row_nodes, dag.n_nodes, w, node_layer=flat)
    assert I.tolist() == pytest.approx(DAG_INFLUENCE, abs=1e-6)
    upside_down = -dag.layer
    I = node_influence(dag.csr, dag.row_nodes, dag.n_nodes, w, node_layer=upside_down)
    assert I.tolist() == pytest.approx(DAG_INFLUENCE, abs=1e-6)
    with pytest.raises(RuntimeError, match="iterations"):  # a cycle still raises, layers or not
        edges = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        node_influence(edges, torch.tensor([0, 1]), 2, torch.tensor([1.0, 0.0]), node_layer=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="node_layer"):
        node_influence(dag.csr, dag.row_nodes, dag.n_nodes, w, node_layer=dag.layer[:3])


def test_layer_ordered_pass_on_a_random_layered_dag():
    """Many layers, rows of one layer interleaved with others in storage: equals the closed form."""
    gen = torch.Generator().manual_seed(1)
    n = 80
    layer = torch.randint(0, 7, (n,), generator=gen)
    layer[-3:] = 7  # three logit-like nodes on top
    A = torch.randn(n, n, generator=gen) * (torch.rand(n, n, generator=gen) < 0.3)
    A *= layer[:, None] > layer[None, :]  # edges only from strictly lower layers
    rows = torch.arange(10, n)
    w = torch.zeros(n)
    w[-3:] = torch.tensor([0.5, 0.3, 0.1])
    I = node_influence(A[rows, : n - 3], rows, n, w, node_layer=layer)
    norm = torch.zeros(n, n, dtype=torch.float64)
    norm[rows, : n - 3] = normalized_abs(A[rows, : n - 3]).double()
    eye = torch.eye(n, dtype=torch.float64)
    closed = w.double() @ (torch.linalg.inv(eye - norm) - eye)
    assert torch.allclose(I.double(), closed, atol=1e-5)
