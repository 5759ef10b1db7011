"""Graph library over HTTP on a real server: import every real file, folders with missing/unsafe
entries, list/search/rename/tag/delete, export that validates and re-imports to the same graph."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest
from serverkit import REAL, upload

REAL_FILES = sorted(p for p in REAL.rglob("*.json") if p.parent.name != "schemas" and p.name != "graph-metadata.json")
SCHEMA = json.loads((REAL / "schemas" / "graph-schema.json").read_text())


def _links(data: dict) -> dict:
    return {(l["source"], l["target"]): round(float(l["weight"]), 5) for l in data["links"]}


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name[:30])
def test_real_file_imports_exports_and_reimports(server, path):
    original = json.loads(path.read_text())
    with server.client() as c:
        got = upload(c, path)
        assert got["n_nodes"] == len(original["nodes"]) and got["state"] == "ok"
        meta = c.get(f"/api/graphs/{got['id']}").json()
        assert meta["tokens"] and meta["scores"]["replacement"] is not None
        exported = c.get(f"/api/graphs/{got['id']}/export.json").json()
        jsonschema.validate(exported, SCHEMA)
        assert {n["node_id"] for n in exported["nodes"]} >= {n["node_id"] for n in original["nodes"]} - {
            n["node_id"] for n in original["nodes"] if "error" in n["feature_type"]}  # fmt: skip
        r = c.post("/api/graphs", json=exported)
        assert r.status_code == 201, r.text
        again = r.json()["id"]
        v1 = c.get(f"/api/graphs/{got['id']}/view", params={"node_threshold": 1, "edge_threshold": 1}).json()
        v2 = c.get(f"/api/graphs/{again}/view", params={"node_threshold": 1, "edge_threshold": 1}).json()
        assert [n["id"] for n in v1["nodes"]] == [n["id"] for n in v2["nodes"]]
        e1 = {(l["source"], l["target"]): round(l["weight"], 5) for l in v1["links"]}
        e2 = {(l["source"], l["target"]): round(l["weight"], 5) for l in v2["links"]}
        assert e1 == e2 and len(e1) == got["n_links"]


def test_anthropic_saved_view_opens(server):
    path = REAL / "anthropic" / "capital-state-dallas.json"
    q = json.loads(path.read_text())["qParams"]
    with server.client() as c:
        gid = upload(c, path)["id"]
        meta = c.get(f"/api/graphs/{gid}").json()
        assert meta["view_url"].startswith("/v/")
        view = c.get(f"/api/views/{meta['view_code']}").json()
        assert view["graph"] == gid
        assert len(view["pinned"]) == len(set(q["pinnedIds"]))
        assert [s[0] for s in view["supernodes"]] == [s[0] for s in q["supernodes"]]
        assert all(x.startswith(("feat:", "err:", "emb:", "logit:")) for x in view["pinned"])
        state = c.get(f"/api/graphs/{gid}/state").json()
        assert state["pinned"] == view["pinned"] and state["version"] == 1
        assert c.get(meta["view_url"]).status_code == 200  # the page


def test_graph_dir_missing_and_unsafe_slugs(server, tmp_path):
    folder = server.data / "imports" / "ct"
    shutil.copytree(REAL / "circuit_tracer_local" / "dallas-austin-topk", folder)
    (folder.parent / "outside.json").write_text(json.dumps(json.loads((folder / "dallas-austin.json").read_text())))
    (folder / "link.json").symlink_to(folder.parent / "outside.json")
    index = json.loads((folder / "graph-metadata.json").read_text())
    good = index["graphs"][0]
    bad = ["gone", "../outside", "/etc/passwd", "%2e%2e/outside", "%252e%252e/outside", "sub/../../outside", "link"]
    index["graphs"] += [dict(good, slug=s) for s in bad]
    (folder / "graph-metadata.json").write_text(json.dumps(index))
    with server.client() as c:
        r = c.post("/api/graphs/import-dir", json={"path": "ct"})
        assert r.status_code == 201, r.text
        states = {g["name"]: g for g in r.json()["graphs"]}
        assert states["dallas-austin"]["state"] == "ok"
        for slug in bad:
            assert states[slug]["state"] == "missing", slug
        assert "missing" in states["gone"]["missing_reason"]
        assert "outside" in states["../outside"]["missing_reason"]
        listed = {g["name"]: g["state"] for g in c.get("/api/graphs").json()}
        assert listed["gone"] == "missing"
        gone = states["gone"]["id"]
        r = c.get(f"/api/graphs/{gone}/view")
        assert r.status_code == 404 and "missing" in r.json()["detail"]
        for rel in ("../", "/etc", "%2e%2e", "ct/../.."):
            r = c.post("/api/graphs/import-dir", json={"path": rel})
            assert r.status_code == 422, rel


def test_list_search_rename_tag_delete(server, toy_graph_file):
    with server.client() as c:
        a = upload(c, toy_graph_file, name="first toy")
        b = upload(c, toy_graph_file, name="second toy")
        gid = a["id"]
        assert c.patch(f"/api/graphs/{gid}", json={"name": "renamed toy", "tags": ["keep", "two-hop"]}).json()["name"]
        ids = lambda **p: {g["id"] for g in c.get("/api/graphs", params=p).json()}  # noqa: E731
        assert gid in ids(q="containing dallas") and gid in ids(q="RENAMED")
        assert gid in ids(tag="two-hop") and b["id"] not in ids(tag="two-hop")
        assert gid in ids(model=a["model"]) and gid in ids(transcoders=a["transcoders"])
        feat = c.get(f"/api/graphs/{gid}/view").json()["nodes"][0]
        assert feat["kind"] == "feature"
        assert gid in ids(feature=f"{feat['layer']}/{feat['feature']}")
        assert gid not in ids(feature="3/999999")
        c.put(f"/api/graphs/{gid}/labels/{feat['id']}", json={"text": "zebra-unique-label", "scope": "node"})
        assert ids(q="zebra-unique") == {gid}
        assert c.get("/api/graphs", params={"feature": "x"}).status_code == 422
        assert c.patch(f"/api/graphs/{gid}", json={"colour": "red"}).status_code == 422
        files = sorted((server.data / "graphs").glob("*.safetensors"))
        assert c.delete(f"/api/graphs/{gid}").status_code == 204
        assert c.get(f"/api/graphs/{gid}").status_code == 404
        assert sorted((server.data / "graphs").glob("*.safetensors")) == files  # b still uses the same file
        assert c.get(f"/api/graphs/{b['id']}/view").status_code == 200


def test_failed_import_stores_nothing(server):
    bad = json.loads((REAL / "circuit_tracer_local" / "dallas-austin-topk" / "dallas-austin.json").read_text())
    bad["nodes"][3]["ctx_idx"] = "three"
    with server.client() as c:
        before = c.get("/api/graphs").json()
        files = sorted((server.data / "graphs").iterdir())
        r = c.post("/api/graphs", json=bad)
        assert r.status_code == 422
        assert "nodes[3].ctx_idx" in r.json()["detail"]
        r = c.post("/api/graphs", content=b"\x00\x01garbage", headers={"content-type": "application/octet-stream"})
        assert r.status_code == 422 and "safetensors" in r.json()["detail"]
        assert c.get("/api/graphs").json() == before
        assert sorted((server.data / "graphs").iterdir()) == files


def test_newer_error_ids_import_the_same(server):
    """circuit-tracer's newer error id `{layer}_-1_{pos}` reads like the older `0_{layer}_{pos}`."""
    path = REAL / "circuit_tracer_local" / "dallas-austin-topk" / "dallas-austin.json"
    data = json.loads(path.read_text())
    newer = json.loads(path.read_text())
    renamed = {}
    for n in newer["nodes"]:
        if "error" in n["feature_type"]:
            renamed[n["node_id"]] = f"{n['layer']}_-1_{n['ctx_idx']}"
            n["node_id"] = renamed[n["node_id"]]
    for link in newer["links"]:
        link["source"] = renamed.get(link["source"], link["source"])
        link["target"] = renamed.get(link["target"], link["target"])
    assert renamed
    with server.client() as c:
        views = []
        for d in (data, newer):
            gid = c.post("/api/graphs", json=d).json()["id"]
            v = c.get(f"/api/graphs/{gid}/view", params={"node_threshold": 1, "edge_threshold": 1}).json()
            views.append(({n["id"] for n in v["nodes"]}, {(l["source"], l["target"], l["weight"]) for l in v["links"]}))
            err = next(iter(renamed.values()))
            assert c.get(f"/api/graphs/{gid}/nodes/{err}/edges", params={"direction": "out"}).status_code == 200
        assert views[0] == views[1]


def test_openapi_docs_offline(server):
    with server.client() as c:
        spec = c.get("/openapi.json").json()
        for path in ("/api/graphs", "/api/graphs/{gid}/view", "/api/graphs/{gid}/subgraph", "/api/jobs/trace",
                     "/api/graphs/{gid}/labels/{node}", "/api/views/{code}", "/api/open"):  # fmt: skip
            assert path in spec["paths"], path
        page = c.get("/docs")
        assert page.status_code == 200 and "/api/graphs/{gid}/view" in page.text
        assert "<script" not in page.text  # nothing to fetch from a CDN
