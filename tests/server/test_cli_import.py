"""`serve --import PATH` (files and graph_file_dir folders) runs on every start without duplicating graphs."""

from __future__ import annotations

import shutil

from serverkit import REAL

from circuit_atlas.server.app import create_app
from circuit_atlas.server.cli import import_paths
from circuit_atlas.server.config import ServerConfig
from circuit_atlas.server.db import GraphRow


def test_start_up_imports_are_idempotent(tmp_path, toy_graph_file):
    folder = tmp_path / "ct"
    shutil.copytree(REAL / "circuit_tracer_local" / "dallas-austin-topk", folder)
    paths = [str(toy_graph_file), str(folder)]
    for _ in range(2):  # two starts on the same data folder
        app = create_app(ServerConfig(data=str(tmp_path / "data")))
        got = import_paths(app, paths)
        assert [g["state"] for g in got] == ["ok", "ok"]
        with app.state.sessions() as s:
            assert s.query(GraphRow).count() == 2
        app.state.engine.dispose()
