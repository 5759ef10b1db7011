"""Safety on real server processes: token, size limits (413), paths that never leave their folder,
and no acknowledged edit lost to kill -9."""

from __future__ import annotations

import re

import httpx
import pytest
from serverkit import Server


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("guarded") / "data", None,
                 ["--token", "s3cret", "--max-request-kb", "4", "--max-upload-mb", "1"])  # fmt: skip
    yield srv
    srv.stop()


def test_token_on_writes_and_reads(guarded, toy_graph_file):
    auth = {"Authorization": "Bearer s3cret"}
    with guarded.client() as c:
        assert c.get("/api/health").status_code == 200  # liveness stays public
        r = c.post("/api/graphs", files={"file": ("toy.safetensors", toy_graph_file.read_bytes())})
        assert r.status_code == 401 and "token" in r.json()["detail"]
        assert c.get("/api/graphs").status_code == 401  # reads too, unless --public-reads
        assert c.get("/api/graphs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/").status_code == 200  # the page itself is not data
    with guarded.client(headers=auth) as c:
        assert c.get("/api/graphs").status_code == 200
        assert c.get("/api/graphs", params={"token": "s3cret"}).status_code == 200


def test_size_limits_answer_413(guarded):
    auth = {"Authorization": "Bearer s3cret"}
    with guarded.client(headers=auth) as c:
        big = {"ids": ["x" * 100] * 100}  # ~10 KB > 4 KiB
        r = c.post("/api/graphs/abc/resolve", json=big)
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        r = c.post("/api/graphs", content=b"{" + b" " * (2 << 20) + b"}", headers={"content-type": "application/json"})
        assert r.status_code == 413

        def chunks():  # no Content-Length: the limit is on the bytes received
            for _ in range(40):
                yield b" " * 65536

        r = c.post("/api/graphs", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/api/graphs").json() == []  # nothing stored


def test_generated_token_and_public_reads(tmp_path):
    srv = Server(tmp_path / "data", None, ["--host", "0.0.0.0", "--public-reads"])
    try:
        token = re.search(r"token for writes: (\S+)", srv.read_log()).group(1)
        with srv.client() as c:
            assert c.get("/api/graphs").status_code == 200
            assert c.patch("/api/graphs/abc", json={"name": "x"}).status_code == 401
            r = c.patch("/api/graphs/abc", json={"name": "x"}, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 404  # past the guard
            assert c.get("/api/health").json()["protected"] is True
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "path",
    ["/static/../circuit_atlas/server/app.py", "/static/%2e%2e/app.py", "/static/%252e%252e/app.py",
     "/static/..%2fapp.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/....//app.py"],
)  # fmt: skip
def test_static_paths_stay_inside(server, path):
    r = httpx.get(server.url + path)
    assert r.status_code in (400, 404) and "create_app" not in r.text and "root:" not in r.text


def test_url_ids_are_not_paths(server):
    with server.client() as c:
        for gid in ("..%2f..%2fetc%2fpasswd", "%2e%2e", "..", "a" * 100):
            assert c.get(f"/api/graphs/{gid}").status_code == 404
            assert c.get(f"/api/graphs/{gid}/export.json").status_code == 404


def test_kill_9_loses_no_acknowledged_edit(server, toy):
    """Write, kill -9 the shared server, restart it on the same data and database, read back."""
    gid = toy["id"]
    with server.client() as c:
        feats = [n["id"] for n in c.get(f"/api/graphs/{gid}/view").json()["nodes"] if n["kind"] == "feature"][:20]
        for i, f in enumerate(feats):
            assert c.put(f"/api/graphs/{gid}/labels/{f}", json={"text": f"label {i}"}).status_code == 200
        assert c.put(f"/api/graphs/{gid}/state", json={"pinned": feats[:5]}).status_code == 200
        code = c.post(f"/api/graphs/{gid}/views", json={"pinned": feats[:2]}).json()["code"]
    server.kill()
    server.start()
    with server.client() as c:
        labels = c.get(f"/api/graphs/{gid}/labels").json()
        assert {f: labels[f]["text"] for f in feats} == {f: f"label {i}" for i, f in enumerate(feats)}
        assert c.get(f"/api/graphs/{gid}/state").json()["pinned"] == feats[:5]
        assert c.get(f"/api/views/{code}").json()["pinned"] == feats[:2]
