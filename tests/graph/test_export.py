import copy
import hashlib
import json
import math
import re

import jsonschema
import pytest
import torch
from shared import REAL_GRAPHS

from circuit_atlas.graph.export import cantor, to_circuit_tracer_json, write_graph_files
from circuit_atlas.graph.json_import import from_circuit_tracer_json, parse_logit_clerp

REAL = REAL_GRAPHS
SCHEMA = json.loads((REAL / "schemas/graph-schema.json").read_text())

# file, dialect, (features, errors, embeddings, logits), links  -- from real_graphs/README.md
REAL_FILES = [
    ("anthropic/capital-state-dallas.json", "anthropic", (71, 11, 11, 1), 2205),
    (
        "neuronpedia/gemma-clt-fact-dallas-austin_2025-09-25T14-52-21-776Z.json",
        "circuit-tracer",
        (304, 90, 11, 10),
        4944,
    ),
    ("neuronpedia/3plus5-plt.json", "legacy", (463, 80, 7, 8), 22789),
    ("circuit_tracer_local/dallas-austin-topk/dallas-austin.json", "circuit-tracer", (10, 3, 8, 10), 33),
]


def _counts(g):
    return tuple(g.count(k) for k in ("feature", "error", "embedding", "logit"))


def _same_graph(a, b):
    for name in ("kind", "layer", "position", "feature"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.allclose(a.activation, b.activation)
    assert torch.equal(a.adjacency, b.adjacency)


def _same_json(original, exported):
    """Same node_ids with the same fields (numbers to float32 precision), same links."""
    a = {n["node_id"]: n for n in original["nodes"]}
    b = {n["node_id"]: n for n in exported["nodes"]}
    assert a.keys() == b.keys() and len(b) == len(exported["nodes"])
    for nid, node in a.items():
        assert node.keys() == b[nid].keys(), nid
        for key, x in node.items():
            y = b[nid][key]
            if isinstance(x, (int, float)) and not isinstance(x, bool) and x is not None:
                assert math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7), (nid, key, x, y)
            else:
                assert x == y, (nid, key, x, y)
    links_a = {(l["source"], l["target"]): l["weight"] for l in original["links"]}
    links_b = {(l["source"], l["target"]): l["weight"] for l in exported["links"]}
    assert len(links_b) == len(exported["links"]) and links_a.keys() == links_b.keys()
    assert all(math.isclose(links_a[k], links_b[k], rel_tol=1e-6) for k in links_a)


def test_export_hand_built_graph(dag):
    out = to_circuit_tracer_json(dag, "my-dag", prune=False)
    jsonschema.validate(out, SCHEMA)
    nodes = {n["node_id"]: n for n in out["nodes"]}
    assert list(nodes) == ["0_3_1", "0_5_2", "1_7_2", "0_0_1", "0_0_2", "0_1_1", "0_1_2",
                           "E_2_0", "E_40_1", "E_41_2", "3_11_2", "3_12_2"]  # fmt: skip
    f2 = nodes["1_7_2"]
    assert (
        (f2["feature"], f2["layer"], f2["ctx_idx"], f2["jsNodeId"])
        == (cantor(1, 7), "1", 2, "1_7-0")
        == (43, "1", 2, "1_7-0")
    )
    assert f2["feature_type"] == "cross layer transcoder" and f2["activation"] == 0.5
    assert f2["influence"] == pytest.approx(0.3 / 1.575)  # top-ranked node: its own share of the total
    err = nodes["0_1_2"]
    assert (err["feature"], err["layer"], err["jsNodeId"], err["activation"]) == (-1, "1", "1_2-0", None)
    assert (nodes["E_40_1"]["feature"], nodes["E_40_1"]["layer"], nodes["E_40_1"]["jsNodeId"]) == (1, "E", "E_40-1")
    l0, l1 = nodes["3_11_2"], nodes["3_12_2"]
    assert l0["clerp"] == 'Output " c" (p=0.600)' and l0["token_prob"] == pytest.approx(0.6)
    assert (l0["is_target_logit"], l1["is_target_logit"], l0["influence"], l0["layer"]) == (True, False, None, "3")
    assert {"source": "0_1_2", "target": "3_11_2", "weight": -2.0} in out["links"] and len(out["links"]) == 12
    meta = out["metadata"]
    assert meta["slug"] == "my-dag" and meta["schema_version"] == 1 and meta["prompt_tokens"] == ["<bos>", " a", " b"]
    assert meta["info"]["generator"]["name"] == "circuit-atlas" and meta["node_threshold"] == 0.8
    assert re.fullmatch(r"circuit-atlas-[0-9a-f]{16}", meta["scan"])

    back = from_circuit_tracer_json(out)
    _same_graph(dag, back)
    assert back.row_nodes.tolist() == dag.row_nodes.tolist() and back.logit_labels == [" c", " d"]
    assert back.input_ids.tolist() == [2, 40, 41] and back.n_layers == 2


def test_export_pruned(dag):
    out = to_circuit_tracer_json(dag, "p", node_threshold=0.8, edge_threshold=0.9)
    jsonschema.validate(out, SCHEMA)
    assert [n["node_id"] for n in out["nodes"]] == [
        "0_3_1",
        "0_5_2",
        "1_7_2",
        "E_2_0",
        "E_40_1",
        "E_41_2",
        "3_11_2",
        "3_12_2",
    ]
    assert len(out["links"]) == 8
    # cumulative influence over the *unpruned* graph: emb0 is last of the non-zero nodes -> 1.0
    influence = {n["node_id"]: n["influence"] for n in out["nodes"]}
    assert influence["E_41_2"] == pytest.approx(0.5875 / 1.575) and influence["E_2_0"] == pytest.approx(1.0)
    assert out["metadata"]["pruning_settings"] == {"node_threshold": 0.8, "edge_threshold": 0.9}
    # exporting the already pruned graph gives the same scores for the nodes kept by influence (its
    # total is remembered); a forced node ranked below dropped ones (emb0, below both errors) scores
    # without them: (1.29375 + .05625) / 1.575
    again = to_circuit_tracer_json(dag.prune(node_threshold=0.8, edge_threshold=0.9), "p", prune=False)
    scores = [n["influence"] for n in again["nodes"]]
    assert scores[:3] + scores[4:6] == pytest.approx(
        [n["influence"] for n in out["nodes"]][:3] + [influence["E_40_1"], influence["E_41_2"]]
    )
    assert scores[3] == pytest.approx(1.35 / 1.575)


def test_scan_is_a_stable_content_hash(dag):
    a = to_circuit_tracer_json(dag, "s", prune=False)["metadata"]["scan"]
    assert to_circuit_tracer_json(dag, "s", prune=False)["metadata"]["scan"] == a
    dag.metadata["model"] = "other-model"
    assert to_circuit_tracer_json(dag, "s", prune=False)["metadata"]["scan"] != a
    meta = to_circuit_tracer_json(dag, "s", prune=False, scan=["tc-a", "tc-b"])["metadata"]
    assert meta["scan"] == "custom-" + hashlib.sha256(b"tc-a-tc-b").hexdigest()[:16]
    assert meta["transcoder_list"] == ["tc-a", "tc-b"]
    assert to_circuit_tracer_json(dag, "s", prune=False, scan="gemma-2-2b")["metadata"]["scan"] == "gemma-2-2b"


def test_colliding_ids_are_made_unique(graph_builder):
    # a layer-0 feature #2 at position 1 and the error (layer 2, position 1) are both "0_2_1" in circuit-tracer
    nodes = [("feature", 0, 1, 2, 1.0), ("feature", 1, 1, 0, 2.0), ("error", 2, 1, -1, 0),
             ("embedding", -1, 0, 5, 0), ("embedding", -1, 1, 6, 0), ("logit", 3, 1, 9, 0.9)]  # fmt: skip
    edges = {(0, 4): 1.0, (1, 0): 1.5, (5, 1): 2.0, (5, 2): 0.5}
    g = graph_builder(nodes, edges, n_layers=3, tokens=["<bos>", "x"], input_ids=[5, 6])
    out = to_circuit_tracer_json(g, "c", prune=False)
    jsonschema.validate(out, SCHEMA)
    ids = [n["node_id"] for n in out["nodes"]]
    assert len(set(ids)) == len(ids) and ids[:3] == ["0_2_1", "1_0_1", "err_2_1"]
    assert out["metadata"]["id_collisions"] == [
        {"node_id": "0_2_1", "renamed_to": "err_2_1", "feature_type": "mlp reconstruction error"}
    ]
    assert {"source": "err_2_1", "target": "4_9_1", "weight": 0.5} in out["links"]
    _same_graph(g, from_circuit_tracer_json(out))


def test_import_keeps_both_nodes_of_a_colliding_id():
    node = {"ctx_idx": 1, "clerp": "", "token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0}
    data = {
        "metadata": {
            "slug": "dup",
            "scan": "s",
            "prompt_tokens": ["<bos>", "x"],
            "prompt": "<bos>x",
            "schema_version": 1,
        },
        "qParams": {},
        "nodes": [
            node
            | {
                "node_id": "0_2_1",
                "feature": 5,
                "layer": "0",
                "feature_type": "cross layer transcoder",
                "jsNodeId": "0_2-0",
            },
            node
            | {
                "node_id": "0_2_1",
                "feature": -1,
                "layer": "2",
                "feature_type": "mlp reconstruction error",
                "jsNodeId": "2_1-0",
            },
            node | {"node_id": "E_7_1", "feature": 1, "layer": "E", "feature_type": "embedding", "jsNodeId": "E_7-1"},
            node
            | {
                "node_id": "4_9_1",
                "feature": 9,
                "layer": "4",
                "feature_type": "logit",
                "jsNodeId": "L_9-1",
                "clerp": 'Output "y" (p=0.900)',
                "token_prob": 0.9,
                "is_target_logit": True,
            },
        ],  # fmt: skip
        "links": [
            {"source": "E_7_1", "target": "0_2_1", "weight": 1.0},  # only the feature can be a target
            {"source": "0_2_1", "target": "4_9_1", "weight": 2.0},  # 1st occurrence -> 1st node (feature)
            {"source": "0_2_1", "target": "4_9_1", "weight": 0.5},  # 2nd occurrence -> 2nd node (error)
        ],
    }
    g = from_circuit_tracer_json(data)
    assert _counts(g) == (1, 1, 1, 1) and g.n_layers == 3
    assert any("'0_2_1'" in w for w in g.metadata["import_warnings"])
    A = g.adjacency  # order: feature, error, embedding, logit
    assert (A[0, 2].item(), A[3, 0].item(), A[3, 1].item(), g.n_edges) == (1.0, 2.0, 0.5, 3)
    assert g.layer.tolist() == [0, 2, -1, 3] and g.logit_labels == ["y"]


@pytest.mark.parametrize(
    "clerp, token, prob",
    [
        ('Output " Austin" (p=0.316)', " Austin", 0.316),
        ('Output """ (p=0.122)', '"', 0.122),
        ('[Output "big" or "large"] Output "large" (p=0.420)', "large", 0.420),
        ('output: "Austin" (p=0.984)', "Austin", 0.984),
        ('Output "⏎⏎" (p=0.026)', "⏎⏎", 0.026),
        ("some label (p=0.5)", None, 0.5),
        ("no probability", None, None),
    ],
)
def test_parse_logit_clerp(clerp, token, prob):
    assert parse_logit_clerp(clerp) == (token, prob)


@pytest.mark.parametrize("name, dialect, counts, n_links", REAL_FILES)
def test_real_files_import_and_round_trip(name, dialect, counts, n_links):
    original = json.loads((REAL / name).read_text())
    g = from_circuit_tracer_json(REAL / name)
    assert g.metadata["dialect"] == dialect and _counts(g) == counts and g.n_edges == n_links
    assert g.metadata["import_warnings"] == []
    assert g.tokens == original["metadata"]["prompt_tokens"]
    exported = to_circuit_tracer_json(g, original["metadata"]["slug"], prune=False)
    jsonschema.validate(exported, SCHEMA)
    _same_json(original, exported)
    assert exported["qParams"] == original["qParams"]
    pruned = to_circuit_tracer_json(g, "pruned")
    jsonschema.validate(pruned, SCHEMA)
    assert 0 < len(pruned["nodes"]) <= len(original["nodes"])


def test_real_file_details():
    clt = from_circuit_tracer_json(REAL / REAL_FILES[1][0])
    nodes = clt.nodes.set_index("id")
    assert nodes.loc["feat:24:10:79427", "feature"] == 79427  # json feature cantor(24, 79427) > 2^31
    big = max(n["feature"] for n in json.loads((REAL / REAL_FILES[1][0]).read_text())["nodes"])
    assert big > 2**32 and clt.input_ids.tolist()[:3] == [2, 18143, 235292]
    assert clt.logit_labels[0] == " Austin" and clt.logit_probabilities[0] == pytest.approx(0.439453125)

    legacy = from_circuit_tracer_json(REAL / REAL_FILES[2][0])
    assert "feat:25:6:14647" in legacy.ids  # feature 2514647 = layer 25, index 14647

    anthropic = from_circuit_tracer_json(REAL / REAL_FILES[0][0])
    originals = anthropic.metadata["circuit_tracer_json"]["nodes"]
    assert originals["feature:1:1:24855676"]["_opaque_feature"] == "24855676"
    assert anthropic.logit_labels == ["Austin"] and anthropic.logit_probabilities[0] == pytest.approx(0.9842367)
    assert anthropic.count("error") == 11 and set(anthropic.layer[anthropic.kind == 1].tolist()) == {0}


def test_probability_falls_back_to_the_clerp():
    data = json.loads((REAL / REAL_FILES[3][0]).read_text())
    for node in data["nodes"]:
        node.pop("token_prob")
    g = from_circuit_tracer_json(copy.deepcopy(data))
    assert g.logit_probabilities[:3].tolist() == pytest.approx([0.316, 0.091, 0.071])


def test_write_graph_files(dag, tmp_path):
    path = write_graph_files(dag, tmp_path, "first", prune=False)
    assert path == tmp_path / "first.json" and json.loads(path.read_text())["metadata"]["slug"] == "first"
    write_graph_files(dag, tmp_path, "nested/second")
    write_graph_files(dag, tmp_path, "first", node_threshold=0.5)
    index = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == ["nested/second", "first"]
    assert index["graphs"][1]["node_threshold"] == 0.5 and (tmp_path / "nested/second.json").is_file()


@pytest.mark.parametrize("slug", ["../escape", "/abs/path", "a/../../b", "..", "", "a\\b", "graph-metadata", "C:/x"])
def test_unsafe_slugs_are_refused(dag, tmp_path, slug):
    with pytest.raises(ValueError, match="slug"):
        write_graph_files(dag, tmp_path / "out", slug)
    assert not (tmp_path / "escape.json").exists()


def test_corrupt_index_is_not_overwritten(dag, tmp_path):
    (tmp_path / "graph-metadata.json").write_text("{oops")
    with pytest.raises(ValueError, match="graph-metadata.json"):
        write_graph_files(dag, tmp_path, "g")
    assert (tmp_path / "graph-metadata.json").read_text() == "{oops" and not (tmp_path / "g.json").exists()


def test_graph_methods_delegate(dag):
    out = dag.to_json("m", prune=False)
    jsonschema.validate(out, SCHEMA)
    _same_graph(dag, type(dag).from_json(out))
    with pytest.raises(ValueError, match="slug"):
        dag.to_json("")


def test_non_numeric_opaque_ids_get_a_stable_integer():
    node = {"ctx_idx": 1, "clerp": "", "token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0}
    data = {
        "metadata": {"slug": "o", "scan": "s", "prompt_tokens": ["a", "b"], "prompt": "ab"},
        "qParams": {},
        "nodes": [
            node
            | {
                "node_id": "3_abc_1",
                "feature": None,
                "layer": "3",
                "feature_type": "cross layer transcoder",
                "jsNodeId": "x",
            }
        ],
        "links": [],
    }
    a, b = from_circuit_tracer_json(copy.deepcopy(data)), from_circuit_tracer_json(copy.deepcopy(data))
    assert a.feature.tolist() == b.feature.tolist() and 0 <= a.feature[0].item() < 2**62
    (original,) = a.metadata["circuit_tracer_json"]["nodes"].values()
    assert original["_opaque_feature"] == "abc"
    assert to_circuit_tracer_json(a, "o", prune=False)["nodes"][0]["node_id"] == "3_abc_1"
