"""View queries against a real server, checked against the in-process Graph (pruning, edges, scores)
and against a hand computation of frontend.md §3.3's supernode re-normalisation."""

from __future__ import annotations

import math

import pytest

from circuit_atlas.graph.graph import Graph


@pytest.fixture(scope="module")
def graph(toy_graph_file) -> Graph:
    return Graph.load(str(toy_graph_file))


def test_pruned_view_matches_graph_prune(server, toy, graph):
    pruned = graph.prune(node_threshold=0.6, edge_threshold=0.9)
    with server.client() as c:
        v = c.get(f"/api/graphs/{toy['id']}/view", params={"node_threshold": 0.6, "edge_threshold": 0.9}).json()
        assert {n["id"] for n in v["nodes"]} == set(pruned.ids)
        assert v["hidden"] == graph.n_nodes - pruned.n_nodes and v["n_total"] == graph.n_nodes
        t, s, _ = pruned.edge_list()
        assert {(pruned.ids[a], pruned.ids[b]) for a, b in zip(s.tolist(), t.tolist())} == {
            (l["source"], l["target"]) for l in v["links"]
        }
        hidden = next(i for i in graph.ids if i not in set(pruned.ids))
        kept = c.get(f"/api/graphs/{toy['id']}/view", params={"node_threshold": 0.6, "edge_threshold": 0.9,
                                                              "keep": hidden}).json()  # fmt: skip
        assert hidden in {n["id"] for n in kept["nodes"]} and kept["hidden"] == v["hidden"] - 1
        for bad in (0, 1.5, -1):
            assert c.get(f"/api/graphs/{toy['id']}/view", params={"node_threshold": bad}).status_code == 422


def test_node_edges_signed_top_k(server, toy, graph):
    adj = graph.adjacency
    ids = graph.ids
    target = ids.index("logit:0")
    with server.client() as c:
        r = c.get(f"/api/graphs/{toy['id']}/nodes/logit:0/edges", params={"direction": "in", "k": 1000}).json()
        got = [(e["id"], e["weight"]) for e in r["edges"]]
        row = adj[target]
        want = sorted(((ids[j], float(row[j])) for j in row.nonzero().flatten().tolist()), key=lambda x: -abs(x[1]))
        assert [g[0] for g in got] == [w[0] for w in want]
        assert all(math.isclose(g[1], w[1], rel_tol=1e-5) for g, w in zip(got, want))
        assert any(w < 0 for _, w in got) and any(w > 0 for _, w in got)
        total = float(row.abs().sum())
        assert math.isclose(r["edges"][0]["pct"], want[0][1] / total, rel_tol=1e-4)
        top3 = c.get(f"/api/graphs/{toy['id']}/nodes/logit:0/edges", params={"k": 3}).json()["edges"]
        assert [e["id"] for e in top3] == [w[0] for w in want[:3]]
        src = want[0][0]
        out = c.get(f"/api/graphs/{toy['id']}/nodes/{src}/edges", params={"direction": "out", "k": 1000}).json()
        assert "logit:0" in [e["id"] for e in out["edges"]]
        np_id = c.get(f"/api/graphs/{toy['id']}/view").json()["nodes"][0]["np_id"]
        assert c.get(f"/api/graphs/{toy['id']}/nodes/{np_id}/edges").status_code == 200  # a viewer id works too
        assert c.get(f"/api/graphs/{toy['id']}/nodes/feat:9:9:9/edges").status_code == 404


def test_subgraph_renormalisation_and_scores(server, toy, graph):
    adj = graph.adjacency
    ids = graph.ids
    with server.client() as c:
        view = c.get(f"/api/graphs/{toy['id']}/view").json()
        feats = [n["id"] for n in view["nodes"] if n["kind"] == "feature"]
        group, single = feats[:3], feats[3:6]
        pinned = single + ["logit:0"] + group
        r = c.post(f"/api/graphs/{toy['id']}/subgraph", json={"pinned": pinned, "supernodes": [["grp", *group]]})
        assert r.status_code == 200, r.text
        out = r.json()
        cards = {card["id"]: card["members"] for card in out["cards"]}
        assert cards["sn:0"] == group and set(cards) == {"sn:0", "logit:0", *single}

        def expected(a: list[str], b: list[str]) -> float:  # frontend.md §3.3, by hand on the dense matrix
            total = 0.0
            for t in b:
                ti = ids.index(t)
                outside = sum(abs(float(adj[ti, j])) for j in range(graph.n_nodes) if ids[j] not in b)
                for s in a:
                    total += float(adj[ti, ids.index(s)]) / outside / len(b)
            return total

        for e in out["edges"]:
            want = expected(cards[e["source"]], cards[e["target"]])
            assert math.isclose(e["weight"], want, rel_tol=1e-4, abs_tol=1e-9), e
        assert out["edges"], "expected some edges between the cards"
        graph_scores = graph.scores()
        assert math.isclose(out["scores"]["graph"]["replacement"], graph_scores["replacement"], rel_tol=1e-4)
        assert math.isclose(out["scores"]["graph"]["completeness"], graph_scores["completeness"], rel_tol=1e-4)
        every = [i for i in ids if i.startswith("feat:")] + ["logit:0"]
        full = c.post(f"/api/graphs/{toy['id']}/subgraph", json={"pinned": every}).json()["scores"]["subgraph"]
        assert math.isclose(full["completeness"], graph_scores["completeness"], rel_tol=1e-4)
        assert out["scores"]["subgraph"]["completeness"] < graph_scores["completeness"]
        bad = c.post(f"/api/graphs/{toy['id']}/subgraph", json={"pinned": ["feat:0:0:0"]})
        assert bad.status_code == 422 and "feat:0:0:0" in bad.json()["detail"]


def test_node_search(server, toy):
    with server.client() as c:
        hits = c.get(f"/api/graphs/{toy['id']}/search", params={"q": "L2"}).json()
        assert hits["total"] > 0 and all(n["layer"] == 2 for n in hits["nodes"])
        hits = c.get(f"/api/graphs/{toy['id']}/search", params={"q": "austin"}).json()
        assert "logit:0" in [n["id"] for n in hits["nodes"]]
