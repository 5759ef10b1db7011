import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

import circuit_atlas.graph.io as gio
from circuit_atlas.graph import Graph
from circuit_atlas.graph.io import load_graph, save_graph


def _assert_same(a: Graph, b: Graph) -> None:
    for name in ("input_ids", "kind", "layer", "position", "feature", "activation", "edges", "row_nodes"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    assert (a.prompt, a.tokens, a.n_layers, a.logit_labels, a.metadata) == (
        b.prompt,
        b.tokens,
        b.n_layers,
        b.logit_labels,
        b.metadata,
    )
    assert (a.influence is None) == (b.influence is None)
    if a.influence is not None:
        assert torch.equal(a.influence, b.influence)


def test_round_trip(dag, tmp_path):
    dag.metadata = {"model": "tiny", "targets": [{"label": " c", "p": 0.6}], "note": "jäsen μ “⏎⏎”"}
    path = tmp_path / "g.safetensors"
    save_graph(dag, path)
    _assert_same(dag, load_graph(path))
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]  # no temp files left behind


def test_round_trip_of_a_pruned_graph_keeps_influence(dag, tmp_path):
    pruned = dag.prune(node_threshold=0.8, edge_threshold=0.9)
    pruned.save(str(tmp_path / "p.safetensors"))
    _assert_same(pruned, Graph.load(str(tmp_path / "p.safetensors")))


def test_tensors_sharing_memory_are_saved(dag, tmp_path):
    dag.position = dag.layer  # the same tensor twice
    save_graph(dag, tmp_path / "s.safetensors")
    assert torch.equal(load_graph(tmp_path / "s.safetensors").position, dag.layer)


def test_graph_without_rows(graph_builder, tmp_path):
    g = graph_builder([("embedding", -1, 0, 7, 0)], {}, n_layers=1, tokens=["x"], labels=[])
    save_graph(g, tmp_path / "e.safetensors")
    _assert_same(g, load_graph(tmp_path / "e.safetensors"))


def test_file_is_safetensors_with_the_documented_header(dag, tmp_path):
    path = tmp_path / "g.safetensors"
    save_graph(dag, path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["circuit_atlas_graph"])
    assert meta["format"] == "circuit-atlas-graph" and meta["version"] == 1
    assert set(header) - {"__metadata__"} == {
        "input_ids",
        "kind",
        "layer",
        "position",
        "feature",
        "activation",
        "edges",
        "row_nodes",
    }


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_graph(tmp_path / "nope.safetensors")


def test_newer_version_is_refused(dag, tmp_path, monkeypatch):
    monkeypatch.setattr(gio, "VERSION", 2)
    save_graph(dag, tmp_path / "new.safetensors")
    monkeypatch.setattr(gio, "VERSION", 1)
    with pytest.raises(ValueError, match=r"new\.safetensors.*version 2"):
        load_graph(tmp_path / "new.safetensors")


def test_non_graph_safetensors_is_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ValueError, match=r"weights\.safetensors.*not a circuit-atlas graph"):
        load_graph(tmp_path / "weights.safetensors")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad_json"])
def test_corrupt_files_are_refused(dag, tmp_path, damage):
    path = tmp_path / "bad.safetensors"
    save_graph(dag, path)
    raw = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x00\x01 not a graph at all" * 3)
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) - 40])
    else:
        save_file({"x": torch.zeros(1)}, str(path), metadata={"circuit_atlas_graph": "{not json"})
    with pytest.raises(ValueError, match=r"bad\.safetensors"):
        load_graph(path)


def test_failed_save_leaves_the_old_file_intact(dag, tmp_path, monkeypatch):
    path = tmp_path / "g.safetensors"
    save_graph(dag, path)
    before = path.read_bytes()

    def explode(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(gio, "save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        save_graph(dag, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["g.safetensors"]


def test_unserializable_metadata_is_a_value_error(dag, tmp_path):
    dag.metadata["bad"] = object()
    with pytest.raises(ValueError, match="JSON"):
        save_graph(dag, tmp_path / "g.safetensors")
    assert not (tmp_path / "g.safetensors").exists()
