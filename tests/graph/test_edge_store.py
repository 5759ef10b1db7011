"""EdgeStore: rows written in batches, dense over a cone of columns, assembled into one sparse CSR."""

import os

import pytest
import torch

from circuit_atlas.graph.edge_store import EdgeStore, check_edge_budget

N_SOURCES = 12


def _batches(seed=0):
    """Rows of a (10, 12) matrix written as 4 batches over different column cones, slots shuffled."""
    gen = torch.Generator().manual_seed(seed)
    dense = torch.zeros(10, N_SOURCES)
    slots = torch.randperm(10, generator=gen)
    batches = []
    for part in (slots[:3], slots[3:5], slots[5:9], slots[9:]):
        cols = torch.sort(torch.randperm(N_SOURCES, generator=gen)[: int(torch.randint(1, N_SOURCES, (1,)))]).values
        block = torch.randn(len(part), len(cols), generator=gen) * (torch.rand(len(part), len(cols)) < 0.7)
        dense[part[:, None], cols[None, :]] = block
        batches.append((part, cols, block))
    return dense, batches


@pytest.mark.parametrize("on_disk", [False, True])
def test_rows_come_back_in_slot_order_exactly(tmp_path, on_disk):
    dense, batches = _batches()
    store = EdgeStore(N_SOURCES, directory=str(tmp_path / "edges") if on_disk else None)
    for slots, cols, block in batches:
        store.add(slots, cols, block)
    assert store.nnz == int((dense != 0).sum())
    order = torch.tensor([9, 0, 3, 1, 2, 4, 8, 5, 6, 7])
    assert torch.equal(store.to_csr(order, in_memory=True).to_dense(), dense[order])  # a working copy
    written = store.slots()
    assert torch.equal(store.to_csr().to_dense(), dense[written])  # default: writing order
    csr = store.finish(torch.arange(10))
    assert torch.equal(csr.to_dense(), dense)
    if on_disk:
        assert os.listdir(tmp_path / "edges") == []  # nothing left behind; the mapping keeps the data


def test_a_subset_of_rows_and_bad_orders():
    dense, batches = _batches(1)
    store = EdgeStore(N_SOURCES)
    for slots, cols, block in batches:
        store.add(slots, cols, block)
    assert torch.equal(store.to_csr(torch.tensor([4, 2])).to_dense(), dense[[4, 2]])
    with pytest.raises(ValueError, match="exactly once"):
        store.to_csr(torch.tensor([4, 4]))
    with pytest.raises(ValueError, match="exactly once"):
        store.to_csr(torch.tensor([10]))


def test_edge_budget_drops_small_entries_and_reports_their_mass():
    block = torch.tensor([[5.0, -0.1, 0.0, 4.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 1.0, -1.0, 1.0, 0.04]])
    store = EdgeStore(5, edge_budget=0.05)
    store.add(torch.tensor([0, 1, 2]), torch.arange(5), block)
    # row 0: mass 9.6, cut 0.48: drops -0.1 (0.5 survives); row 2: mass 4.04, cut 0.202: drops 0.04
    expected = torch.tensor([[5.0, 0.0, 0.0, 4.0, 0.5], [0.0] * 5, [1.0, 1.0, -1.0, 1.0, 0.0]])
    report = store.report()
    assert torch.equal(store.finish().to_dense(), expected)
    assert report["dropped_edges"] == 2 and report["kept_edges"] == 7
    assert report["dropped_abs_mass"] == pytest.approx(0.14, abs=1e-6)
    assert report["total_abs_mass"] == pytest.approx(13.64, abs=1e-5)
    assert report["max_row_dropped_share"] == pytest.approx(0.1 / 9.6, abs=1e-6)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, float("nan"), True, "0.1"])
def test_edge_budget_must_be_a_fraction(bad):
    with pytest.raises(ValueError, match=r"edge_budget must be None .* fraction in \(0, 1\)"):
        check_edge_budget(bad)
    assert check_edge_budget(None) is None and check_edge_budget(0.01) == 0.01


@pytest.mark.parametrize("budget", [None, 0.05])
def test_wide_blocks_are_thinned_a_few_rows_at_a_time_with_the_same_result(monkeypatch, budget):
    """A block wider than ADD_ENTRIES is stored in row groups: same CSR, same budget report."""
    import circuit_atlas.graph.edge_store as edge_store

    gen = torch.Generator().manual_seed(3)
    block = torch.randn(7, N_SOURCES, generator=gen) * (torch.rand(7, N_SOURCES, generator=gen) < 0.8)
    slots, cols = torch.randperm(7, generator=gen), torch.arange(N_SOURCES)

    def stored(add_entries):
        monkeypatch.setattr(edge_store, "ADD_ENTRIES", add_entries)
        store = EdgeStore(N_SOURCES, edge_budget=budget)
        store.add(slots, cols, block)
        n_chunks = len(store._chunks)
        return store.report(), n_chunks, store.finish(torch.arange(7)).to_dense()

    whole, one, dense = stored(1 << 24)
    grouped, many, dense_grouped = stored(2 * N_SOURCES)  # two rows a group
    assert one == 1 and many == 4
    assert torch.equal(dense, dense_grouped) and whole == grouped
    if budget is None:
        assert torch.equal(dense[slots], block)
