"""Schema migrations: from an empty database to head, and from the previous revision (0001, with data)
to head, on SQLite and PostgreSQL; a server started on an old data folder upgrades it and serves it."""

from __future__ import annotations

import hashlib
import json
import shutil
import time

import pytest
from serverkit import Server, database
from sqlalchemy import inspect, text

from circuit_atlas.server import db


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    url, drop = database(request.param)
    engine = db.make_engine(url or f"sqlite:///{tmp_path / 'old.sqlite'}")
    yield engine
    engine.dispose()
    drop()


def _insert_0001_graph(conn, gid: str, sha: str, n_nodes: int) -> None:
    conn.execute(text("INSERT INTO graphs (id, name, prompt, model, transcoders, sha256, n_nodes, n_links, tags, created, "
                      "state, source, meta, search) VALUES (:id, 'old graph', 'p', 'm', 't', :sha, :n, 0, '[]', :c, 'ok', "
                      "'old', :meta, 'old graph')"),
                 {"id": gid, "sha": sha, "n": n_nodes, "c": time.time(), "meta": json.dumps({"node_threshold": 0.8})})  # fmt: skip
    conn.execute(text("INSERT INTO labels (scope, scope_key, node_key, graph_id, node_id, text, at) "
                      "VALUES ('node', :id, 'logit:0', :id, 'logit:0', 'kept across the upgrade', :c)"),
                 {"id": gid, "c": time.time()})  # fmt: skip


def test_empty_to_head(engine):
    assert db.current_revision(engine) is None
    db.upgrade(engine)
    assert db.current_revision(engine) == db.SCHEMA_HEAD
    tables = set(inspect(engine).get_table_names())
    assert {"graphs", "graph_features", "labels", "states", "views", "jobs"} <= tables


def test_previous_schema_with_data_to_head(engine):
    db.upgrade(engine, "0001")
    assert db.current_revision(engine) == "0001"
    assert "jobs" not in inspect(engine).get_table_names()
    with engine.begin() as conn:
        _insert_0001_graph(conn, "oldgraph0001", "0" * 64, 3)
    db.upgrade(engine)
    assert db.current_revision(engine) == "0002"
    with engine.connect() as conn:
        row = conn.execute(text("SELECT name, created, updated FROM graphs WHERE id = 'oldgraph0001'")).one()
        assert row.name == "old graph" and row.updated == row.created
        assert conn.execute(text("SELECT text FROM labels")).scalar() == "kept across the upgrade"
    with db.sessions(engine)() as s:
        s.add(db.JobRow(id="j1", kind="trace", state="done", request={}, created=time.time()))
        s.commit()
        assert s.get(db.GraphRow, "oldgraph0001").updated is not None


def test_server_upgrades_an_old_data_folder(tmp_path, toy_graph_file):
    data = tmp_path / "data"
    (data / "graphs").mkdir(parents=True)
    sha = hashlib.sha256(toy_graph_file.read_bytes()).hexdigest()
    shutil.copy(toy_graph_file, data / "graphs" / f"{sha}.safetensors")  # influence sidecar absent: recomputed
    engine = db.make_engine(f"sqlite:///{data / 'circuit-atlas.sqlite'}")
    db.upgrade(engine, "0001")
    from circuit_atlas.graph.graph import Graph

    with engine.begin() as conn:
        _insert_0001_graph(conn, "oldgraph0001", sha, Graph.load(str(toy_graph_file)).n_nodes)
    engine.dispose()
    srv = Server(data, None)
    try:
        with srv.client() as c:
            assert c.get("/api/graphs").json()[0]["id"] == "oldgraph0001"
            assert c.get("/api/graphs/oldgraph0001/labels").json()["logit:0"]["text"] == "kept across the upgrade"
            assert len(c.get("/api/graphs/oldgraph0001/view").json()["nodes"]) > 10
            assert c.put("/api/graphs/oldgraph0001/labels/logit:0", json={"text": "new"}).status_code == 200
    finally:
        srv.stop()
    engine = db.make_engine(f"sqlite:///{data / 'circuit-atlas.sqlite'}")
    assert db.current_revision(engine) == db.SCHEMA_HEAD
