"""Saved views (/v/<code>), the long Neuronpedia URL form in every id dialect, JSON/CSV export."""

from __future__ import annotations

import csv
import io
import json

import jsonschema
from serverkit import REAL

SCHEMA = json.loads((REAL / "schemas" / "graph-schema.json").read_text())


def test_saved_view_is_immutable_and_short(server, toy):
    gid = toy["id"]
    with server.client() as c:
        nodes = c.get(f"/api/graphs/{gid}/view").json()["nodes"]
        a, b, d = [n["id"] for n in nodes if n["kind"] == "feature"][:3]
        c.put(f"/api/graphs/{gid}/labels/{a}", json={"text": "Texas"})
        body = {"pinned": [a, b, "logit:0"], "supernodes": [["grp", a, b]], "node_threshold": 0.7,
                "edge_threshold": 0.9, "positions": {"sn:0": [10, 20]}}  # fmt: skip
        r = c.post(f"/api/graphs/{gid}/views", json=body)
        assert r.status_code == 201
        code, url = r.json()["code"], r.json()["url"]
        assert url == f"/v/{code}" and len(code) <= 10
        c.put(f"/api/graphs/{gid}/labels/{a}", json={"text": "changed later"})
        c.put(f"/api/graphs/{gid}/state", json={"pinned": [d]})
        view = c.get(f"/api/views/{code}").json()
        assert view["graph"] == gid and view["pinned"] == [a, b, "logit:0"] and view["labels"][a] == "Texas"
        assert view["supernodes"] == [["grp", a, b]] and view["node_threshold"] == 0.7
        page = c.get(url)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert c.get("/api/views/nope1234").status_code == 404
        assert c.get("/api/views/..%2f..%2fetc").status_code == 404


def test_long_url_in_every_dialect(server, toy):
    gid = toy["id"]
    with server.client() as c:
        nodes = {n["id"]: n for n in c.get(f"/api/graphs/{gid}/view").json()["nodes"]}
        feats = [i for i, n in nodes.items() if n["kind"] == "feature"][:2]
        errs = [i for i, n in nodes.items() if n["kind"] == "error"][:1]
        ours = feats + errs + ["logit:0"]
        theirs = [nodes[i]["np_id"] for i in ours]
        newer_err = [f"{nodes[e]['layer']}_-1_{nodes[e]['position']}" for e in errs]
        for pinned in (ours, theirs, [*theirs[:2], *newer_err, theirs[-1]]):
            params = {"slug": gid, "pinnedIds": ",".join(pinned), "pruningThreshold": "0.6",
                      "supernodes": json.dumps([["two", pinned[0], pinned[1]]]),
                      "clerps": json.dumps([[pinned[0], "from the URL"]])}  # fmt: skip
            r = c.get("/api/open", params=params)
            assert r.status_code == 200, r.text
            v = r.json()
            assert v["graph"] == gid and v["pinned"] == ours and v["supernodes"] == [["two", *ours[:2]]]
            assert v["labels"] == {ours[0]: "from the URL"} and v["node_threshold"] == 0.6
        feat = nodes[feats[0]]
        every = c.get(f"/api/graphs/{gid}/view", params={"node_threshold": 1, "edge_threshold": 1}).json()["nodes"]
        same = [n["id"] for n in every if n["kind"] == "feature" and (n["layer"], n["feature"]) == (feat["layer"],
                                                                                                 feat["feature"])]  # fmt: skip
        number = (feat["layer"] + feat["feature"]) * (feat["layer"] + feat["feature"] + 1) // 2 + feat["feature"]
        r = c.get("/api/open", params={"slug": gid, "clerps": json.dumps([[str(number), "by feature number"]])})
        assert r.status_code == 200 and r.json()["labels"] == {i: "by feature number" for i in same}
        r = c.get("/api/open", params={"slug": gid, "pinnedIds": "99_1_1,feat:0:0:0"})
        assert r.status_code == 422 and "99_1_1" in r.json()["detail"]
        assert c.get("/api/open", params={"slug": "no-such-graph"}).status_code == 404


def test_export_json_labels_and_view_reimport(server, toy):
    gid = toy["id"]
    with server.client() as c:
        nodes = c.get(f"/api/graphs/{gid}/view").json()["nodes"]
        a, b = [n for n in nodes if n["kind"] == "feature"][:2]
        c.put(f"/api/graphs/{gid}/labels/{a['id']}", json={"text": "say Austin"})
        c.put(f"/api/graphs/{gid}/state", json={"pinned": [a["id"], b["id"]], "supernodes": [["pair", a["id"], b["id"]]],
                                                "node_threshold": 0.7})  # fmt: skip
        data = c.get(f"/api/graphs/{gid}/export.json").json()
        jsonschema.validate(data, SCHEMA)
        by_id = {n["node_id"]: n for n in data["nodes"]}
        assert by_id[a["np_id"]]["clerp"] == "say Austin"
        q = data["qParams"]
        assert q["pinnedIds"] == [a["np_id"], b["np_id"]] and q["supernodes"] == [["pair", a["np_id"], b["np_id"]]]
        assert q["pruningThreshold"] == 0.7 and [a["np_id"], "say Austin"] in q["clerps"]
        again = c.post("/api/graphs", json=data).json()
        assert again["n_nodes"] == toy["n_nodes"] and again["n_links"] == toy["n_links"]
        state = c.get(f"/api/graphs/{again['id']}/state").json()
        assert state["pinned"] == [a["id"], b["id"]]  # the view came back
        rows = list(csv.DictReader(io.StringIO(c.get(f"/api/graphs/{gid}/export.csv?what=nodes").text)))
        assert len(rows) == toy["n_nodes"] and next(r for r in rows if r["id"] == a["id"])["label"] == "say Austin"
        edges = list(csv.DictReader(io.StringIO(c.get(f"/api/graphs/{gid}/export.csv?what=edges").text)))
        assert len(edges) == toy["n_links"]
        assert c.get(f"/api/graphs/{gid}/export.csv?what=all").status_code == 422
