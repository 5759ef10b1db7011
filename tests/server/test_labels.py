"""Labels at three scopes with history, conflicts, and the merged, versioned working state."""

from __future__ import annotations

import threading

from serverkit import upload

XSS = "<img src=x onerror=alert(1)>"


def _features(c, gid, n=3):
    return [x["id"] for x in c.get(f"/api/graphs/{gid}/view").json()["nodes"] if x["kind"] == "feature"][:n]


def test_three_scopes_precedence_and_revert(server, toy, toy_graph_file):
    with server.client() as c:
        gid = toy["id"]
        f = _features(c, gid, 1)[0]
        layer, pos, index = f.split(":")[1:]
        other = upload(c, toy_graph_file)["id"]  # same transcoder set
        r = c.put(f"/api/graphs/{gid}/labels/{f}", json={"text": "feature-wide", "scope": "feature"})
        assert r.status_code == 200 and r.json()["scope"] == "feature"
        assert c.get(f"/api/graphs/{other}/labels").json()[f]["text"] == "feature-wide"  # shown in every graph
        c.put(f"/api/graphs/{gid}/labels/{f}", json={"text": "this graph", "scope": "graph"})
        assert c.get(f"/api/graphs/{gid}/labels").json()[f]["text"] == "this graph"
        assert c.get(f"/api/graphs/{other}/labels").json()[f]["text"] == "feature-wide"
        c.put(f"/api/graphs/{gid}/labels/{f}", json={"text": "this node", "scope": "node"})
        node = next(x for x in c.get(f"/api/graphs/{gid}/view", params={"keep": f}).json()["nodes"] if x["id"] == f)
        assert (node["label"], node["label_scope"]) == ("this node", "node") and "auto_label" in node
        assert c.delete(f"/api/graphs/{gid}/labels/{f}", params={"scope": "node"}).status_code == 200
        assert c.get(f"/api/graphs/{gid}/labels").json()[f]["text"] == "this graph"
        history = c.get(f"/api/graphs/{gid}/labels/{f}/history").json()
        assert [(h["scope"], h["text"]) for h in history] == [
            ("feature", "feature-wide"), ("graph", "this graph"), ("node", "this node"), ("node", None)]  # fmt: skip
        r = c.put(f"/api/graphs/{gid}/labels/err:0:1", json={"text": "x", "scope": "feature"})
        assert r.status_code in (404, 422)
        r = c.put(f"/api/graphs/{gid}/labels/logit:0", json={"text": "x", "scope": "graph"})
        assert r.status_code == 422 and "only features" in r.json()["detail"]
        assert c.put(f"/api/graphs/{gid}/labels/{f}", json={"text": "x" * 2001}).status_code == 422
        assert c.put(f"/api/graphs/{gid}/labels/{f}", json={"text": "x", "scope": "world"}).status_code == 422
        assert (layer, index) and pos


def test_conflicting_label_edit_is_409(server, toy):
    with server.client() as c:
        f = _features(c, toy["id"], 1)[0]
        v1 = c.put(f"/api/graphs/{toy['id']}/labels/{f}", json={"text": "a", "base_version": 0}).json()["version"]
        c.put(f"/api/graphs/{toy['id']}/labels/{f}", json={"text": "b", "base_version": v1})
        r = c.put(f"/api/graphs/{toy['id']}/labels/{f}", json={"text": "c", "base_version": v1})
        assert r.status_code == 409 and r.json()["current"]["text"] == "b"


def test_labels_are_data_not_markup(server, toy):
    with server.client() as c:
        f = _features(c, toy["id"], 1)[0]
        c.put(f"/api/graphs/{toy['id']}/labels/{f}", json={"text": XSS})
        r = c.get(f"/api/graphs/{toy['id']}/labels")
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.json()[f]["text"] == XSS  # verbatim, as a JSON string: the page sets it as text
        csv = c.get(f"/api/graphs/{toy['id']}/export.csv").text
        assert XSS in csv
        assert c.get(f"/api/graphs/{toy['id']}/export.json").json()["nodes"]
        c.patch(f"/api/graphs/{toy['id']}", json={"name": XSS})
        assert c.get(f"/api/graphs/{toy['id']}").json()["name"] == XSS
        page = c.get(f"/graphs/{toy['id']}")
        assert XSS not in page.text  # the page is static: data never gets templated into HTML


def test_two_clients_editing_state_never_lose_edits(server, toy):
    gid = toy["id"]
    with server.client() as c:
        a, b, x, y = _features(c, gid, 4)
        base = c.get(f"/api/graphs/{gid}/state").json()["version"]
        s1 = c.put(f"/api/graphs/{gid}/state", json={"pinned": [a], "positions": {a: [1, 2]}, "base_version": base,
                                                     "client": "one"}).json()  # fmt: skip
        # client two still thinks the state is `base`
        s2 = c.put(f"/api/graphs/{gid}/state", json={"pinned": [b], "positions": {b: [3, 4]},
                                                     "supernodes": [["g", x, y]], "base_version": base}).json()  # fmt: skip
        assert s2["version"] == s1["version"] + 1
        assert s2["pinned"] == [a, b] and s2["positions"] == {a: [1, 2], b: [3, 4]}
        assert s2["supernodes"] == [["g", x, y]]
        s3 = c.put(f"/api/graphs/{gid}/state", json={"pinned": [b], "base_version": s2["version"]}).json()
        assert s3["pinned"] == [b]  # a removal against the current version removes
        hist = c.get(f"/api/graphs/{gid}/state/history").json()
        assert [h["version"] for h in hist][-3:] == [s1["version"], s2["version"], s3["version"]]
        restored = c.post(f"/api/graphs/{gid}/state/restore/{s2['version']}").json()
        assert restored["pinned"] == [a, b] and restored["version"] == s3["version"] + 1
        np_id = next(n["np_id"] for n in c.get(f"/api/graphs/{gid}/view").json()["nodes"] if n["id"] == a)
        s4 = c.put(f"/api/graphs/{gid}/state", json={"pinned": [np_id]}).json()
        assert s4["pinned"] == [a]  # a viewer id is stored as ours
        assert c.put(f"/api/graphs/{gid}/state", json={"pinned": ["nope"]}).status_code == 422
        assert c.put(f"/api/graphs/{gid}/state", json={"positions": {a: "left"}}).status_code == 422
        assert c.put(f"/api/graphs/{gid}/state", json={"colour": 1}).status_code == 422


def test_concurrent_state_pins_all_kept(server, toy):
    gid = toy["id"]
    with server.client() as c:
        feats = _features(c, gid, 12)
        base = c.get(f"/api/graphs/{gid}/state").json()

    def pin(f):
        with server.client() as c:
            r = c.put(
                f"/api/graphs/{gid}/state", json={"pinned": base["pinned"] + [f], "base_version": base["version"]}
            )
            assert r.status_code == 200, r.text

    threads = [threading.Thread(target=pin, args=(f,)) for f in feats]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with server.client() as c:
        assert set(c.get(f"/api/graphs/{gid}/state").json()["pinned"]) >= set(feats)
