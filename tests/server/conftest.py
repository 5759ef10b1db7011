"""A real `circuit-atlas serve` process per database backend (SQLite file, PostgreSQL), shared by the tests
(see tests/serverkit.py; the postgres cases skip locally without CIRCUIT_ATLAS_TEST_PG and fail in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverkit import Server, database, upload


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(request, tmp_path_factory):
    url, drop = database(request.param)
    srv = Server(tmp_path_factory.mktemp(f"data-{request.param}") / "data", url)
    srv.kind = request.param
    yield srv
    srv.stop()
    drop()


@pytest.fixture(scope="session")
def toy_graph_file(tmp_path_factory) -> Path:
    """A toy-world graph traced once per session (.safetensors)."""
    from circuit_atlas import attribute
    from circuit_atlas.replacement_model import ReplacementModel

    path = tmp_path_factory.mktemp("toy") / "toy.safetensors"
    model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    attribute(model, "The capital of the state containing Dallas is", progress=False).save(str(path))
    return path


@pytest.fixture()
def toy(server, toy_graph_file) -> dict:
    """A fresh import of the toy graph on the server under test: {"id", ...}."""
    with server.client() as c:
        return upload(c, toy_graph_file)
