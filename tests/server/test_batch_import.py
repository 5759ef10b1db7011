"""A `trace-batch` output folder goes into the library in one command (`serve --import DIR`, or `--import-only`
for scripts), on a real server process over SQLite and PostgreSQL: every graph of the manifest, failed prompts
listed as missing with their error, nothing twice on a second import, a changed file refused by its sha256."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serverkit import ROOT, Server, database

from circuit_atlas.cli import main
from circuit_atlas.graph import Graph
from circuit_atlas.server.app import create_app
from circuit_atlas.server.config import ServerConfig
from circuit_atlas.server.library import list_graphs

MODEL = ["--model", "toyworld", "--transcoders", "toyworld-clt", "--no-progress"]
LINES = [
    {"prompt": "The capital of the state containing Dallas is", "id": "dallas"},
    {"prompt": "The opposite of small is"},
    {"prompt": "The capital of the state containing Oakland is", "target": " Zzyzx"},  # fails: not one token
]


def _write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def batches(tmp_path_factory) -> tuple[Path, Path]:
    """v1/out: two graphs and one failed prompt; v2/out: the same folder re-run with the failing target fixed."""
    root = tmp_path_factory.mktemp("batches")
    first, second = root / "v1" / "out", root / "v2" / "out"
    assert main(["trace-batch", str(_write_lines(root / "p1.jsonl", LINES)), "--out", str(first), *MODEL]) == 1
    shutil.copytree(first, second)
    fixed = [*LINES[:2], {"prompt": LINES[2]["prompt"]}]
    assert main(["trace-batch", str(_write_lines(root / "p2.jsonl", fixed)), "--out", str(second), *MODEL]) == 0
    return first, second


def _import_only(data: Path, db: str | None, *folders: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "circuit_atlas", "serve", "--data", str(data), "--import-only"]
    for folder in folders:
        cmd += ["--import", str(folder)]
    cmd += ["--db", db] if db else []
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _batch_rows(client) -> list[dict]:
    return sorted(client.get("/api/graphs", params={"tag": "batch:out"}).json(), key=lambda r: r["name"])


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_batch_folder_imports_in_one_command(kind, batches, tmp_path):
    first, second = batches
    url, drop = database(kind)
    data = tmp_path / "data"
    try:
        manifest = json.loads((first / "manifest.json").read_text())
        server = Server(data, url, args=["--import", str(first)])  # serve, with the batch in its library
        try:
            with server.client() as c:
                rows = _batch_rows(c)
                assert [(x["name"], x["state"]) for x in rows] == [
                    ("The capital of the state containing Oakland is", "missing"),
                    ("The opposite of small is", "ok"),
                    ("dallas", "ok"),
                ]
                assert "trace-batch failed on this prompt: ValueError: target ' Zzyzx'" in rows[0]["missing_reason"]
                by_prompt = {g["prompt"]: g for g in manifest["graphs"]}
                for row in rows[1:]:
                    entry = by_prompt[row["prompt"]]
                    graph = Graph.load(str(first / entry["file"]))
                    assert row["n_nodes"] == entry["n_nodes"] == graph.n_nodes
                    meta = c.get(f"/api/graphs/{row['id']}").json()
                    assert meta["tokens"] == graph.tokens and "batch:out" in meta["tags"]
                    view = c.get(f"/api/graphs/{row['id']}/view").json()
                    assert view["nodes"], "the imported graph answers view queries"
                ids = {x["name"]: x["id"] for x in rows}

                # Over HTTP, from the data folder's imports/: a graph changed after the run is refused by sha256.
                tampered = data / "imports" / "tampered"
                shutil.copytree(first, tampered)
                path = tampered / "dallas.safetensors"
                raw = bytearray(path.read_bytes())
                raw[-1] ^= 1
                path.write_bytes(bytes(raw))
                got = c.post("/api/graphs/import-dir", json={"path": "tampered"})
                assert got.status_code == 201, got.text
                states = {g["name"]: (g["state"], g.get("missing_reason") or "") for g in got.json()["graphs"]}
                assert states["dallas"][0] == "missing" and "sha256 differs" in states["dallas"][1]
                assert [s for s, _ in states.values()] == ["missing", "ok", "missing"]
        finally:
            server.stop()

        # The folder re-run with the failing prompt fixed, imported by a script (no server): the new graph
        # replaces the missing row and the two graphs already there are not imported twice.
        r = _import_only(data, url, second)
        assert r.returncode == 0, r.stderr
        assert "3 of 3 entries imported as graphs" in r.stdout
        assert f"imported 'dallas' as {ids['dallas']} (ok)" in r.stdout
        assert f"imported 'The opposite of small is' as {ids['The opposite of small is']} (ok)" in r.stdout
        app = create_app(ServerConfig(data=str(data), db=url))
        try:
            with app.state.sessions() as session:
                rows = list_graphs(session, tag="batch:out")
                assert sorted((r.name, r.state) for r in rows) == [
                    ("The capital of the state containing Oakland is", "ok"),
                    ("The opposite of small is", "ok"),
                    ("dallas", "ok"),
                ]
        finally:
            app.state.engine.dispose()
    finally:
        drop()


def test_import_only_errors(tmp_path):
    r = _import_only(tmp_path / "data", None)
    assert r.returncode == 2 and "--import-only needs at least one --import PATH" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text('{"format": "circuit-atlas-trace-batch", "version": 9, "graphs": []}')
    r = _import_only(tmp_path / "data", None, empty)
    assert r.returncode == 2 and "has manifest version 9; this circuit-atlas reads version 1" in r.stderr
    assert "Traceback" not in r.stderr
