"""Attribution's edges are sparse from the first batch: causal cones, the edge store, the edge budget."""

import pytest
import torch
from tiny import PROMPT, tiny_llama_replacement

from circuit_atlas import attribute
from circuit_atlas.attribution.backward import attribute_rows, cone_columns
from circuit_atlas.attribution.context import build_context
from circuit_atlas.graph.graph import EMBEDDING, ERROR, FEATURE, LOGIT


@pytest.fixture(scope="module", params=["plt", "clt"])
def model(request):
    return tiny_llama_replacement(request.param)


@pytest.fixture(scope="module")
def graph(model):
    return attribute(model, PROMPT, max_n_logits=4, progress=False)


def test_every_row_holds_only_its_causal_cone(graph):
    targets, sources, _ = graph.edge_list()
    kind_t, kind_s = graph.kind[targets], graph.kind[sources]
    is_feature = kind_t == FEATURE
    assert bool(is_feature.any()) and bool((kind_t == LOGIT).any())
    layer_t, layer_s = graph.layer[targets], graph.layer[sources]
    pos_t, pos_s = graph.position[targets], graph.position[sources]
    assert bool((pos_s <= pos_t).all())  # no source after its target
    body = (kind_s == FEATURE) | (kind_s == ERROR)
    assert bool((layer_s[body] < layer_t[body]).all())  # features and errors only from lower layers
    assert bool((kind_s[is_feature & (layer_t == 0)] == EMBEDDING).all())
    assert graph.n_edges < graph.n_rows * graph.n_sources / 2  # far from dense


def test_a_batch_is_dense_over_its_cone_only(model):
    ctx = build_context(model.freeze(model.tokenize(PROMPT)))
    low = (ctx.features[:, 0] == 1) & (ctx.features[:, 1] == 3)  # features at layer 1, position 3
    idx = low.nonzero().squeeze(1)
    cols, rows = attribute_rows(ctx, ctx.features[idx, 0], ctx.features[idx, 1], ctx.encoder_rows(idx))
    assert torch.equal(cols, cone_columns(ctx, 1, 4)) and rows.shape == (len(idx), len(cols))
    assert len(cols) < ctx.n_sources / 3
    f = ctx.features[cols[cols < ctx.n_features]]
    assert bool((f[:, 0] < 1).all() and (f[:, 1] <= 3).all())


def test_memory_mapped_store_gives_the_same_graph(model, graph, tmp_path):
    mapped = attribute(model, PROMPT, max_n_logits=4, edge_dir=str(tmp_path), progress=False)
    for a, b in zip(graph.edge_list(), mapped.edge_list()):
        assert torch.equal(a, b)
    assert list(tmp_path.iterdir()) == []  # the files are unlinked; the graph's mappings hold the data
    assert mapped.scores() == graph.scores()


def test_edge_budget_drops_exactly_the_small_edges_and_records_their_mass(model, graph):
    f = 0.02
    cut = attribute(model, PROMPT, max_n_logits=4, edge_budget=f, progress=False)
    A = graph.dense_rows().double()  # exact rows, (R, S)
    keep = A.abs() >= f * A.abs().sum(dim=1, keepdim=True)
    assert torch.equal(cut.row_nodes, graph.row_nodes)
    # exact mode keeps every non-zero entry; the budget keeps exactly the entries above its cut
    assert torch.equal(cut.dense_rows().double(), torch.where(keep, A, 0.0))
    report = cut.metadata["edge_budget"]
    assert 0 < cut.n_edges < graph.n_edges and report["dropped_edges"] == graph.n_edges - cut.n_edges
    dropped = float((A.abs() * ~keep).sum())
    assert report["dropped_abs_mass"] == pytest.approx(dropped, rel=1e-5)
    assert report["dropped_share"] == pytest.approx(dropped / float(A.abs().sum()), rel=1e-5)
    assert cut.metadata["settings"]["edge_budget"] == f and "edge_budget" not in graph.metadata


def test_partial_graph_rows_equal_the_full_graph_rows(model, graph):
    part = attribute(model, PROMPT, max_n_logits=4, max_feature_nodes=20, batch_size=8, progress=False)
    rows = torch.stack([(graph.row_nodes == n).nonzero()[0, 0] for n in part.row_nodes])
    torch.testing.assert_close(part.dense_rows(), graph.dense_rows(rows), rtol=1e-5, atol=1e-6)


def test_bad_edge_budget_is_one_clear_error(model):
    with pytest.raises(ValueError, match="edge_budget"):
        attribute(model, PROMPT, edge_budget=1.5, progress=False)
