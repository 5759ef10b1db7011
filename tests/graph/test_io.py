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
    names = ("input_ids", "kind", "layer", "position", "feature", "activation", "row_nodes")
    for name in names + ("edge_indptr", "edge_sources", "edge_values"):
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
    assert meta["format"] == "circuit-atlas-graph" and meta["version"] == 2
    assert set(header) - {"__metadata__"} == {
        "input_ids",
        "kind",
        "layer",
        "position",
        "feature",
        "activation",
        "row_nodes",
        "edge_indptr",
        "edge_sources",
        "edge_values",
    }
    assert header["edge_values"]["shape"] == [dag.n_edges] and header["edge_sources"]["dtype"] == "I32"
    assert len(header["__metadata__"]["circuit_atlas_sha256"]) == 64


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_graph(tmp_path / "nope.safetensors")


def test_newer_version_is_refused(dag, tmp_path, monkeypatch):
    current = gio.VERSION
    monkeypatch.setattr(gio, "VERSION", current + 1)
    save_graph(dag, tmp_path / "new.safetensors")
    monkeypatch.setattr(gio, "VERSION", current)
    with pytest.raises(ValueError, match=rf"new\.safetensors.*version {current + 1}"):
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


# --- version 1 files (dense edges, no checksum) still load -----------------------------------


def _save_v1(graph: Graph, path) -> None:
    """A version-1 file exactly as circuit-atlas 1 wrote it: a dense `edges` (n_rows, n_sources) tensor."""
    tensors = {name: getattr(graph, name).contiguous() for name in ("kind", "layer", "position", "feature")}
    tensors |= {"input_ids": graph.input_ids, "activation": graph.activation, "row_nodes": graph.row_nodes.clone()}
    tensors["edges"] = graph.dense_rows()
    header = {"format": "circuit-atlas-graph", "version": 1, "prompt": graph.prompt, "tokens": graph.tokens,
              "n_layers": graph.n_layers, "logit_labels": graph.logit_labels, "metadata": graph.metadata}  # fmt: skip
    save_file(tensors, str(path), metadata={"circuit_atlas_graph": json.dumps(header)})


def test_version_1_file_loads_as_sparse(dag, tmp_path):
    _save_v1(dag, tmp_path / "v1.safetensors")
    back = load_graph(tmp_path / "v1.safetensors")
    _assert_same(dag, back)
    assert torch.equal(back.adjacency, dag.adjacency) and back.n_edges == 12
    back.save(str(tmp_path / "v2.safetensors"))  # re-saved as version 2
    assert load_graph(tmp_path / "v2.safetensors").n_edges == 12


# --- corruption: one checksum, one clear error -------------------------------------------------


def _flip(path, offset: int, bit: int = 0) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1 << bit
    path.write_bytes(bytes(raw))


def _header_length(path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_a_flipped_bit_in_tensor_data_is_a_corrupt_file_error(dag, tmp_path):
    path = tmp_path / "g.safetensors"
    save_graph(dag, path)
    start = 8 + _header_length(path)
    header = json.loads(path.read_bytes()[8:start])
    lo, hi = header["edge_values"]["data_offsets"]
    _flip(path, start + lo + 2, 3)  # one bit of the first edge weight's mantissa: still a valid float
    with pytest.raises(ValueError, match=r"g\.safetensors is corrupt: its contents do not match the sha256"):
        load_graph(path)
    assert load_graph(path, verify=False).n_edges == dag.n_edges  # the damage itself is silent


def test_a_flipped_bit_in_the_graph_header_is_a_corrupt_file_error(dag, tmp_path):
    dag.metadata = {"model": "tiny"}
    path = tmp_path / "g.safetensors"
    save_graph(dag, path)
    raw = path.read_bytes()
    at = raw.index(b"tiny")
    _flip(path, at, 1)  # "tiny" -> "tkny": valid JSON, valid UTF-8, a different graph
    with pytest.raises(ValueError, match=r"g\.safetensors is corrupt"):
        load_graph(path)


def test_every_single_bit_flip_is_one_clear_corrupt_error(dag, tmp_path):
    """Flip one bit in every byte of the file (header and data): each load is a ValueError naming the
    file and saying it is corrupt; none loads, none leaks another exception type."""
    dag.metadata = {"model": "tiny", "note": "ünïcode"}
    good = tmp_path / "good.safetensors"
    save_graph(dag, good)
    raw = good.read_bytes()
    path = tmp_path / "bad.safetensors"
    for offset in range(len(raw)):
        damaged = bytearray(raw)
        damaged[offset] ^= 1 << (offset % 8)
        path.write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match=r"bad\.safetensors.*corrupt") as info:
            load_graph(path)
        assert "Traceback" not in str(info.value), offset


def test_a_version_2_file_without_its_checksum_is_corrupt(dag, tmp_path):
    path = tmp_path / "g.safetensors"
    save_graph(dag, path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = {"circuit_atlas_graph": f.metadata()["circuit_atlas_graph"]}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ValueError, match=r"g\.safetensors is corrupt.*checksum"):
        load_graph(path)
