"""A layer-0 feature and an error node sharing one node_id (as in real Neuronpedia files): every link
goes to the right node, told apart by its place in its target's run, never guessed."""

from __future__ import annotations

import copy

import pytest

from circuit_atlas.graph.graph import Graph


@pytest.fixture(scope="module")
def collided():
    from circuit_atlas import attribute
    from circuit_atlas.replacement_model import ReplacementModel

    model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    graph = attribute(model, "The capital of the state containing Dallas is", progress=False)
    data = graph.to_json("collision", prune=True, node_threshold=0.9, edge_threshold=0.99)
    nodes = {n["node_id"]: n for n in data["nodes"]}
    targets: dict[str, set[str]] = {}
    for link in data["links"]:
        targets.setdefault(link["source"], set()).add(link["target"])
    # an error 0_{l}_{p} and a layer-0 feature at the same position, where the error also feeds a
    # target the feature does not (the case a first-come guess gets wrong) and they share one target
    for err in (n for n in data["nodes"] if n["feature_type"] == "mlp reconstruction error"):
        for feat in (n for n in data["nodes"] if n["feature_type"] != "mlp reconstruction error"):
            if feat["layer"] != "0" or feat["ctx_idx"] != err["ctx_idx"] or not feat["node_id"][0].isdigit():
                continue
            e_t, f_t = targets.get(err["node_id"], set()), targets.get(feat["node_id"], set())
            if e_t - f_t and e_t & f_t:
                break
        else:
            continue
        break
    else:
        pytest.fail("the development graph has no error / layer-0 feature pair to collide")
    collided = copy.deepcopy(data)
    old = feat["node_id"]
    for n in collided["nodes"]:
        if n["node_id"] == old:
            n["node_id"] = err["node_id"]
    for link in collided["links"]:
        for end in ("source", "target"):
            if link[end] == old:
                link[end] = err["node_id"]
    assert nodes[err["node_id"]]
    return data, collided, old, err["node_id"]


def _edges(graph: Graph, rename: dict[str, str]) -> dict[tuple[str, str], float]:
    ids = graph.ids
    t, s, w = graph.edge_list()
    return {(rename.get(ids[a], ids[a]), rename.get(ids[b], ids[b])): round(float(x), 6)
            for a, b, x in zip(s.tolist(), t.tolist(), w.tolist())}  # fmt: skip


def test_every_link_goes_to_the_right_node(collided):
    data, bad, feat_id, err_id = collided
    want = Graph.from_json(data)
    got = Graph.from_json(bad)
    assert any("shared by 2 nodes" in w for w in got.metadata["import_warnings"])
    # the collided feature's index is read from its new id (the error's layer); map it back by position
    layer, index, pos = feat_id.split("_")
    new_layer, new_index = err_id.split("_")[:2]
    rename = {f"feat:0:{pos}:{new_index}": f"feat:0:{pos}:{index}"}
    assert _edges(got, rename) == _edges(want, {})
    assert layer == "0" and new_layer == "0"
