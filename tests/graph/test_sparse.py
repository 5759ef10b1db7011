"""The sparse (CSR) edge storage of a Graph, checked against the dense matrices it replaces."""

import pytest
import torch

from circuit_atlas.graph import Graph
from circuit_atlas.graph.sparse import CSR


def _random_dense(rows=7, cols=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=gen) * (torch.rand(rows, cols, generator=gen) < 0.4)


def test_csr_round_trips_dense_and_stores_only_nonzeros():
    dense = _random_dense()
    csr = CSR.from_dense(dense)
    assert csr.nnz == int((dense != 0).sum()) and csr.shape == (7, 9)
    assert torch.equal(csr.to_dense(), dense)
    assert csr.sources.dtype == torch.int32 and csr.indptr.dtype == torch.int64


@pytest.fixture(params=[1 << 20, 3, 1], ids=["one-block", "blocks-of-3", "blocks-of-1"])
def block(request, monkeypatch):
    """Run with the blocked passes cut into one block, or many (rows never split)."""
    import circuit_atlas.graph.sparse as sparse

    monkeypatch.setattr(sparse, "BLOCK", request.param)
    return request.param


def test_blocks_cover_every_entry_once_in_whole_rows(block):
    csr = CSR.from_dense(_random_dense())
    seen = torch.cat([rows for _, _, rows in csr.blocks()])
    assert torch.equal(seen, csr.row_ids().long())
    ends = [(s, e) for s, e, _ in csr.blocks()]
    assert ends[0][0] == 0 and ends[-1][1] == csr.nnz and all(a[1] == b[0] for a, b in zip(ends, ends[1:]))


def test_csr_ops_equal_their_dense_forms(block):
    dense = _random_dense()
    csr = CSR.from_dense(dense)
    v = torch.randn(7)
    assert torch.allclose(csr.rmatvec(v), v @ dense, atol=1e-6)
    assert torch.allclose(csr.row_sum(csr.values), dense.sum(1), atol=1e-6)
    norm = dense.abs() / dense.abs().sum(1, keepdim=True).clamp_min(1e-10)
    assert torch.allclose(csr.abs_normalized().to_dense(), norm, atol=1e-6)
    index = torch.tensor([4, 0, 4, 6])
    assert torch.equal(csr.take_rows(index).to_dense(), dense[index])
    keep = csr.values > 0
    assert torch.equal(csr.mask_entries(keep).to_dense(), dense.clamp_min(0))


def test_from_coo_sorts_and_sums_repeats():
    csr = CSR.from_coo(torch.tensor([1, 0, 1, 1]), torch.tensor([2, 1, 0, 2]), torch.tensor([1.0, 2.0, 3.0, 4.0]), 3, 4)
    assert csr.indptr.tolist() == [0, 1, 3, 3] and csr.sources.tolist() == [1, 0, 2]
    assert csr.values.tolist() == [2.0, 3.0, 5.0]


def _columns(n_sources=3, n_logits=1):
    n = n_sources + n_logits
    return dict(
        prompt="x", input_ids=torch.tensor([0]), tokens=["x"], n_layers=1,
        kind=torch.tensor([2] * n_sources + [3] * n_logits, dtype=torch.int8),
        layer=torch.zeros(n, dtype=torch.long), position=torch.zeros(n, dtype=torch.long),
        feature=torch.zeros(n, dtype=torch.long), activation=torch.ones(n), logit_labels=["a"] * n_logits,
    )  # fmt: skip


def test_graph_from_dense_rows_equals_graph_from_csr():
    dense = torch.tensor([[0.0, 2.0, -1.0]])
    a = Graph(**_columns(), row_nodes=torch.tensor([3]), edges=dense)
    b = Graph(**_columns(), row_nodes=torch.tensor([3]), edge_indptr=torch.tensor([0, 2]),
              edge_sources=torch.tensor([1, 2]), edge_values=torch.tensor([2.0, -1.0]))  # fmt: skip
    for g in (a, b):
        assert g.n_edges == 2 and torch.equal(g.dense_rows(), dense)
        assert [t.tolist() for t in g.edge_list()] == [[3, 3], [1, 2], [2.0, -1.0]]
        assert g.adjacency[3, :3].tolist() == [0.0, 2.0, -1.0]


def test_explicit_zeros_are_not_stored():
    g = Graph(**_columns(), row_nodes=torch.tensor([3]), edge_indptr=torch.tensor([0, 3]),
              edge_sources=torch.tensor([0, 1, 2]), edge_values=torch.tensor([0.0, 2.0, 0.0]))  # fmt: skip
    assert g.n_edges == 1 and g.edge_sources.tolist() == [1]


def test_edge_list_is_sorted_by_target_when_rows_are_not():
    cols = _columns(n_sources=3, n_logits=2)
    cols["kind"] = torch.tensor([0, 2, 2, 3, 3], dtype=torch.int8)
    dense = torch.tensor([[0.0, 1.0, 0.0], [0.0, 3.0, 4.0], [5.0, 0.0, 2.0]])  # rows: node 4, node 0, node 3
    g = Graph(**cols | {"logit_labels": ["a", "b"]}, row_nodes=torch.tensor([4, 0, 3]), edges=dense)
    targets, sources, weights = g.edge_list()
    assert targets.tolist() == [0, 0, 3, 3, 4] and sources.tolist() == [1, 2, 0, 2, 1]
    assert weights.tolist() == [3.0, 4.0, 5.0, 2.0, 1.0]


@pytest.mark.parametrize(
    "indptr, sources, values, message",
    [
        ([0, 1], [0, 1], [1.0, 1.0], "end at the 2 stored edges"),
        ([0, 2, 2], [0, 1], [1.0, 1.0], "edge_indptr has shape"),
        ([0, 2], [1, 0], [1.0, 1.0], "strictly increasing"),
        ([0, 2], [1, 1], [1.0, 1.0], "strictly increasing"),
        ([0, 1], [3], [1.0], r"lie in \[0, 3\)"),
        ([0, 1], [0], [1.0, 2.0], "equal length"),
    ],
)
def test_invalid_csr_is_one_clear_error(indptr, sources, values, message):
    with pytest.raises(ValueError, match=message):
        Graph(**_columns(), row_nodes=torch.tensor([3]), edge_indptr=torch.tensor(indptr),
              edge_sources=torch.tensor(sources), edge_values=torch.tensor(values))  # fmt: skip


def test_dense_edges_attribute_is_gone_with_a_pointer(dag):
    with pytest.raises(AttributeError, match="edge_list"):
        dag.edges  # noqa: B018
    with pytest.raises(ValueError, match="not both"):
        Graph(**_columns(), row_nodes=torch.tensor([3]), edges=torch.zeros(1, 3), edge_indptr=torch.tensor([0, 0]))
