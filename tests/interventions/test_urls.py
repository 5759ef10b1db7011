"""decode_url: both id styles, the 0_l_p collision, logits, URL forms, errors, and real graph files."""

import json
from urllib.parse import quote, urlencode

import pytest
import torch
from shared import REAL_GRAPHS
from tiny import tiny_model, tiny_tokenizer

from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.graph import Graph
from circuit_atlas.graph.graph import KINDS
from circuit_atlas.interventions.spec import Feature, Supernode
from circuit_atlas.interventions.urls import NodeRef, decode_url, viewer_ids
from circuit_atlas.transcoders.random import random_transcoders

NP = "https://www.neuronpedia.org/gemma-2-2b/graph"


def url(**params) -> str:
    for key in ("supernodes", "clerps"):
        if key in params and not isinstance(params[key], str):
            params[key] = json.dumps(params[key])
    if isinstance(params.get("pinnedIds"), list):
        params["pinnedIds"] = ",".join(params["pinnedIds"])
    return f"{NP}?{urlencode(params)}"


def small_graph(with_collision: bool = True) -> Graph:
    """2 layers, tokens <bos> a b. Layer-0 feature #1 at position 2 and the layer-1 error at position 2 are
    both '0_1_2' in the viewers' ids (the feature is left out when with_collision=False)."""
    nodes = [("feature", 0, 2, 1, 1.5), ("feature", 1, 2, 7, 0.5),
             ("error", 0, 1, -1, 0), ("error", 0, 2, -1, 0), ("error", 1, 1, -1, 0), ("error", 1, 2, -1, 0),
             ("embedding", -1, 0, 2, 0), ("embedding", -1, 1, 40, 0), ("embedding", -1, 2, 41, 0),
             ("logit", 2, 2, 11, 0.6), ("logit", 2, 2, 12, 0.2)]  # fmt: skip
    if not with_collision:
        nodes = nodes[1:]
    kind = [KINDS.index(n[0]) for n in nodes]
    rows = [i for i, n in enumerate(nodes) if n[0] in ("feature", "logit")]
    n_sources = sum(n[0] != "logit" for n in nodes)

    def col(j, dtype=torch.long):
        return torch.tensor([n[j] for n in nodes], dtype=dtype)

    return Graph(prompt="<bos> a b", input_ids=torch.tensor([2, 40, 41]), tokens=["<bos>", " a", " b"], n_layers=2,
                 kind=torch.tensor(kind, dtype=torch.int8), layer=col(1), position=col(2), feature=col(3),
                 activation=col(4, torch.float32), edges=torch.zeros(len(rows), n_sources),
                 row_nodes=torch.tensor(rows), logit_labels=[" c", " d"])  # fmt: skip


# --- ids without a graph ------------------------------------------------------------------


@pytest.mark.parametrize(
    "ours, theirs, expected",
    [
        ("feat:1:2:7", ["1_7_2"], NodeRef("feature", 1, 2, 7, "")),
        ("err:1:2", ["err_1_2"], NodeRef("error", 1, 2, None, "")),
        ("emb:2", ["E_41_2", "E_41-2"], NodeRef("embedding", None, 2, 41, "")),
        ("logit:0", ["3_11_2", "L_11-2"], NodeRef("logit", 2, 2, 11, "")),
    ],
)
def test_each_kind_in_both_styles(ours, theirs, expected):
    for raw in [ours] + theirs:
        (ref,) = decode_url(url(pinnedIds=raw), n_layers=2).pinned
        assert (ref.kind, ref.id, ref.node) == (expected.kind, raw, None)
        if raw == ours and ref.kind in ("embedding", "logit"):  # ours name no token: emb:P, logit:K
            assert ref.index is None and (ref.position, ref.logit_index) == ((2, None) if ref.kind == "embedding"
                                                                              else (None, 0))  # fmt: skip
        else:
            assert (ref.layer, ref.position, ref.index) == (expected.layer, expected.position, expected.index)
    assert decode_url(url(pinnedIds="feat:1:2:7")).pinned[0].as_feature() == Feature(1, 2, 7)
    with pytest.raises(ValueError, match="is an error node, not a feature"):
        NodeRef("error", 1, 2, None, "0_1_2").as_feature()


def test_zero_layer_ids_and_logits_without_a_graph():
    view = decode_url(url(pinnedIds="0_1_2,3_11_2"))
    assert [r.kind for r in view.pinned] == ["feature", "feature"]  # no n_layers: read as features, with notes
    assert any("0_a_b were read as layer-0 features" in n for n in view.notes)
    assert any("pass graph= or n_layers=" in n or "without graph= or n_layers=" in n for n in view.notes)
    view = decode_url(url(pinnedIds="0_1_2,3_11_2"), n_layers=2)
    assert [(r.kind, r.layer, r.position, r.index) for r in view.pinned] == [("feature", 0, 2, 1), ("logit", 2, 2, 11)]
    with pytest.raises(ValueError, match=r"layer 2 is not in a 2-layer model"):
        decode_url(url(pinnedIds="2_11_2"), n_layers=2)
    with pytest.raises(ValueError, match="n_layers must be a positive integer"):
        decode_url(url(pinnedIds="1_1_1"), n_layers=0)


def test_ids_without_a_position_need_the_graph():
    with pytest.raises(ValueError, match="jsNodeId without a token position") as err:
        decode_url(url(pinnedIds="3_120-0,18_16400899_-0"))
    assert "'3_120-0'" in str(err.value) and "'18_16400899_-0'" in str(err.value)


# --- ids against a graph --------------------------------------------------------------------


def test_collision_resolves_as_export_names_it():
    g = small_graph()
    ids = [n["node_id"] for n in g.to_json("s", prune=False)["nodes"]]
    assert ids[0] == "0_1_2" and "err_1_2" in ids  # export keeps the id for the feature, renames the error
    view = decode_url(url(pinnedIds="0_1_2,err_1_2,err:1:2,feat:0:2:1"), graph=g)
    assert [r.node for r in view.pinned] == ["feat:0:2:1", "err:1:2", "err:1:2", "feat:0:2:1"]
    assert view.pinned[0].as_feature() == Feature(0, 2, 1)
    assert any("'0_1_2' names both" in n and "'err_1_2'" in n for n in view.notes)
    # a graph with only the error: the same id is the error
    (ref,) = decode_url(url(pinnedIds="0_1_2"), graph=small_graph(with_collision=False)).pinned
    assert (ref.kind, ref.layer, ref.position, ref.node) == ("error", 1, 2, "err:1:2")


def test_logits_and_embeddings_resolve_to_tokens():
    g = small_graph()
    view = decode_url(url(pinnedIds="logit:1,3_11_2,L_12-2,emb:1,E_41_2"), graph=g)
    got = [(r.kind, r.layer, r.position, r.index, r.node, r.logit_index) for r in view.pinned]
    assert got == [("logit", 2, 2, 12, "logit:1", 1), ("logit", 2, 2, 11, "logit:0", 0),
                   ("logit", 2, 2, 12, "logit:1", 1), ("embedding", None, 1, 40, "emb:1", None),
                   ("embedding", None, 2, 41, "emb:2", None)]  # fmt: skip
    with pytest.raises(ValueError, match="n_layers=3 but the graph has 2 layers"):
        decode_url(url(pinnedIds="logit:0"), graph=g, n_layers=3)


def test_ids_missing_from_the_graph_are_listed():
    with pytest.raises(ValueError, match="3 node id") as err:
        decode_url(url(pinnedIds="1_8_2,feat:1:2:8,logit:5", supernodes=[["x", "1_7_2"]]), graph=small_graph())
    text = str(err.value)
    assert all(f"'{i}' (pinnedIds): no such node in the graph" in text for i in ("1_8_2", "feat:1:2:8", "logit:5"))


def test_tiny_model_graph_round_trips_every_exported_id():
    tok = tiny_tokenizer()
    hf = tiny_model("llama", tokenizer=tok)
    cfg = hf.config
    model = ReplacementModel(hf, tok, random_transcoders("plt", cfg.num_hidden_layers, cfg.hidden_size, 16))
    g = attribute(model, "the capital of Texas is", progress=False)
    full = g.to_json("tiny", prune=False)
    assert full["metadata"].get("id_collisions")  # this graph has colliding ids, so the test covers them
    ids = [n["node_id"] for n in full["nodes"]]
    assert viewer_ids(g)[0] == ids
    view = decode_url(url(pinnedIds=ids), graph=g)
    assert [r.node for r in view.pinned] == g.ids
    assert [r.kind for r in view.pinned] == [KINDS[k] for k in g.kind.tolist()]
    # the pruned file the viewer shows, read back: its ids resolve against it
    pruned = g.to_json("tiny", prune=True, node_threshold=0.5)
    shown = Graph.from_json(pruned)
    view = decode_url(url(pinnedIds=[n["node_id"] for n in pruned["nodes"]]), graph=shown)
    kind_of = {"cross layer transcoder": "feature", "mlp reconstruction error": "error", "embedding": "embedding",
               "logit": "logit"}  # fmt: skip
    assert [(r.kind, r.position) for r in view.pinned] == [(kind_of[n["feature_type"]], n["ctx_idx"])
                                                           for n in pruned["nodes"]]  # fmt: skip


# --- supernodes, URL forms, errors ----------------------------------------------------------


def test_supernodes_duplicates_and_feature_supernodes():
    groups = [["Texas", "1_7_2", "E_41_2"], ["Texas", "feat:0:2:1"], ["Texas", "1_7_2"], ["Dallas", "E_40_1"],
              ["Texas (2)", "1_7_2"]]  # fmt: skip
    view = decode_url(url(supernodes=groups), n_layers=2)
    assert list(view.supernodes) == ["Texas", "Texas (2)", "Texas (3)", "Dallas", "Texas (2) (2)"]
    supers = view.feature_supernodes()
    assert supers[0] == Supernode("Texas", [Feature(1, 2, 7)])
    assert supers[1] == Supernode("Texas (2)", [Feature(0, 2, 1)])
    assert supers[3] == Supernode("Dallas", None)  # only token nodes: features=None, as spec.py marks them
    assert [(name, r.id) for name, r in view.skipped] == [("Texas", "E_41_2"), ("Dallas", "E_40_1")]


def test_url_forms_all_decode_alike():
    groups = [["say Austin", "1_7_2", "0_1_2"]]
    params = {"slug": "dallas-austin", "pinnedIds": "1_7_2,E_41_2", "supernodes": json.dumps(groups),
              "clerps": json.dumps([["1_7_2", "Texas (the state)"]]), "clickedId": "1_7_2"}  # fmt: skip
    query = urlencode(params)
    raw_query = "&".join(f"{k}={v}" for k, v in params.items())  # not percent-encoded at all
    forms = [
        f"{NP}?{query}",
        f"{NP}?{raw_query}",
        query,
        "?" + query,
        f"http://localhost:8000/graph/dallas-austin?{urlencode({k: v for k, v in params.items() if k != 'slug'})}",
        (
            f"{NP}?slug=dallas-austin&pinnedIds=1_7_2,E_41_2&supernodes={quote(quote(params['supernodes']))}"
            f"&clerps={quote(params['clerps'])}&clickedId=1_7_2"
        ),  # supernodes encoded twice
    ]
    views = [decode_url(form, n_layers=2) for form in forms]
    for view in views:
        assert view.slug == "dallas-austin"
        assert [r.id for r in view.pinned] == ["1_7_2", "E_41_2"]
        assert [r.id for r in view.supernodes["say Austin"]] == ["1_7_2", "0_1_2"]
        assert view.clerps == {"1_7_2": "Texas (the state)"}
        assert view.clicked.as_feature() == Feature(1, 2, 7)
    assert views[0].pinned_features() == [Feature(1, 2, 7)]
    empty = decode_url(f"{NP}?slug=x")
    assert (empty.supernodes, empty.pinned, empty.clerps, empty.clicked) == ({}, [], {}, None)


def test_malformed_input_gives_one_clear_error():
    with pytest.raises(ValueError) as err:
        decode_url(url(pinnedIds="1_7_2,feat:1:2,banana,1_x_2", supernodes=[["g", "E_4"]]), n_layers=2)
    text = str(err.value)
    assert text.startswith("4 node id(s) could not be read in the URL")
    assert all(f"'{i}'" in text for i in ("feat:1:2", "banana", "1_x_2", "E_4")) and "'1_7_2'" not in text
    assert "not a node id; expected feat:L:P:F" in text
    with pytest.raises(ValueError, match=r"supernodes parameter is not valid JSON .*expected e\.g\."):
        decode_url(url(supernodes='[["Texas", "1_7_2"'))
    with pytest.raises(ValueError, match="supernodes parameter must be a JSON list"):
        decode_url(url(supernodes='{"Texas": ["1_7_2"]}'))
    with pytest.raises(ValueError, match=r"supernodes entry 1 is \[\"x\", 5\], not \[name, node_id, \.\.\.\]"):
        decode_url(url(supernodes=[["ok", "1_7_2"], ["x", 5]]))
    with pytest.raises(ValueError, match=r"supernodes entry 0 is \[\]"):
        decode_url(url(supernodes=[[]]))
    with pytest.raises(ValueError, match="clerps entry 0"):
        decode_url(url(clerps=[["1_7_2"]]))
    with pytest.raises(ValueError, match="the URL as a string"):
        decode_url(None)


# --- real graph files -----------------------------------------------------------------------

NEURONPEDIA = REAL_GRAPHS / "neuronpedia/gemma-clt-fact-dallas-austin_2025-09-25T14-52-21-776Z.json"
ANTHROPIC = REAL_GRAPHS / "anthropic/capital-state-dallas.json"


@pytest.mark.skipif(not NEURONPEDIA.is_file(), reason="../shared/real_graphs is not here")
def test_real_neuronpedia_file():
    data = json.loads(NEURONPEDIA.read_text())
    first = {}
    for n in data["nodes"]:
        first.setdefault(n["feature_type"], n)
    picked = [first[t] for t in ("cross layer transcoder", "mlp reconstruction error", "embedding", "logit")]
    graph = Graph.from_json(NEURONPEDIA)
    link = url(slug=data["metadata"]["slug"], pinnedIds=[n["node_id"] for n in picked],
               supernodes=[["group", picked[0]["node_id"], picked[2]["node_id"]]])  # fmt: skip
    view = decode_url(link, graph=graph)
    assert [r.kind for r in view.pinned] == ["feature", "error", "embedding", "logit"]
    for ref, node in zip(view.pinned, picked):
        assert ref.position == node["ctx_idx"] and ref.id == node["node_id"]
    feature, error, embedding, logit = view.pinned
    assert feature.as_feature() == Feature(int(picked[0]["layer"]), picked[0]["ctx_idx"],
                                           int(picked[0]["node_id"].split("_")[1]))  # fmt: skip
    assert error.layer == int(picked[1]["layer"]) and logit.layer == graph.n_layers == 26
    assert logit.index == picked[3]["feature"] and embedding.index == int(picked[2]["node_id"].split("_")[1])
    assert [s.name for s in view.feature_supernodes()] == ["group"] and len(view.skipped) == 1
    # a unique legacy jsNodeId resolves; one shared by several nodes is refused
    js = {}
    for n in data["nodes"]:
        js.setdefault(n["jsNodeId"], []).append(n)
    unique = next(k for k, v in js.items() if len(v) == 1 and v[0]["feature_type"] == "cross layer transcoder")
    shared = next(k for k, v in js.items() if len(v) > 1)
    (ref,) = decode_url(url(pinnedIds=unique), graph=graph).pinned
    assert ref.id == unique and ref.position == js[unique][0]["ctx_idx"]
    with pytest.raises(ValueError, match="jsNodeId shared by"):
        decode_url(url(pinnedIds=shared), graph=graph)


@pytest.mark.skipif(not ANTHROPIC.is_file(), reason="../shared/real_graphs is not here")
def test_real_anthropic_saved_view():
    # Anthropic's saved views name nodes by jsNodeId ({layer}_{id}_-{k}); their graph resolves them
    data = json.loads(ANTHROPIC.read_text())
    q = data["qParams"]
    link = "https://transformer-circuits.pub/2025/attribution-graphs/?" + urlencode(
        {"slug": data["metadata"]["slug"], "pinnedIds": ",".join(q["pinnedIds"]),
         "supernodes": json.dumps(q["supernodes"]), "clickedId": q["clickedId"]})  # fmt: skip
    view = decode_url(link, graph=Graph.from_json(ANTHROPIC))
    assert list(view.supernodes) == [s[0] for s in q["supernodes"]]
    assert sum(map(len, view.supernodes.values())) == sum(len(s) - 1 for s in q["supernodes"])
    by_js = {n["jsNodeId"]: n for n in data["nodes"]}
    for ref in view.pinned:
        node = by_js[ref.id]
        kind = "logit" if node["feature_type"] == "logit" else "feature"
        assert (ref.kind, ref.position) == (kind, node["ctx_idx"])
    assert len(view.pinned_features()) == len(q["pinnedIds"]) - 1  # the one logit is not a feature
    assert view.clicked.id == q["clickedId"] and view.clicked.kind == "feature"
