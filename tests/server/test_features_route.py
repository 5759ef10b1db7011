"""Feature dashboards through the server: the route answers the shipped toy-world dashboards as
feature JSON, feature nodes get their automatic labels from them, and a name never becomes a path."""

from __future__ import annotations

import json

from shared import REAL_GRAPHS

from circuit_atlas.features.dashboards import load_dashboard


def test_feature_route_serves_the_shipped_dashboards(server):
    import jsonschema

    schema = json.loads((REAL_GRAPHS / "schemas" / "feature-details-schema.json").read_text())
    with server.client() as c:
        r = c.get("/api/features/toyworld-clt/1/42")
        assert r.status_code == 200, r.text
        jsonschema.validate(r.json(), schema)
        assert r.json() == json.loads(json.dumps(load_dashboard("toyworld-clt", 1, 42).to_json()))
        missing = c.get("/api/features/no-such-set/1/42")
        assert missing.status_code == 404 and "features build" in missing.json()["detail"]
        for bad in ("..%2F..%2Fetc", "%2e%2e", "..", ".hidden"):
            assert c.get(f"/api/features/{bad}/1/42").status_code == 404


def test_feature_nodes_carry_dashboard_labels(server, toy):
    from circuit_atlas.features.dashboards import feature_labels

    labels = feature_labels("toyworld-clt")
    with server.client() as c:
        view = c.get(f"/api/graphs/{toy['id']}/view").json()
    feats = [n for n in view["nodes"] if n["kind"] == "feature"]
    assert feats
    for n in feats:
        assert n["auto_label"] == labels[(n["layer"], n["feature"])]
        assert n["label"] == n["auto_label"]


def test_feature_search_through_the_api(server):
    from circuit_atlas.features.dashboards import find_dashboards
    from circuit_atlas.features.dashboards.search import search

    with server.client() as c:
        r = c.get("/api/features/toyworld-clt/search", params={"promotes": " Austin", "limit": 5})
        assert r.status_code == 200, r.text
        expected = search(find_dashboards("toyworld-clt"), promotes=" Austin", limit=5)
        assert [(f["layer"], f["index"]) for f in r.json()["features"]] == [(h.layer, h.index) for h in expected]
        assert expected, "some toy-world feature promotes ' Austin'"
        assert c.get("/api/features/toyworld-clt/search").status_code == 422  # no criterion: one clear error
        assert c.get("/api/features/nope/search", params={"label": "x"}).status_code == 404


def test_library_names_the_transcoder_set_as_it_was_loaded(server, toy):
    with server.client() as c:
        row = next(g for g in c.get("/api/graphs").json() if g["id"] == toy["id"])
    assert row["transcoder_name"] == "toyworld-clt" and row["transcoders"] != "toyworld-clt"  # the scan id stays
