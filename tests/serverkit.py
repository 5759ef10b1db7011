"""Helpers for tests/server: a real `circuit-atlas serve` process, fresh PostgreSQL databases, uploads.

PostgreSQL: set CIRCUIT_ATLAS_TEST_PG to a SQLAlchemy URL (postgresql+psycopg://...); each test
session creates a fresh database on that server and drops it afterwards. Without the variable
the postgres cases skip locally and FAIL in CI (CI set), so CI can never silently lose them.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("CIRCUIT_ATLAS_SHARED", "/work/shared")) / "real_graphs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data: Path, db: str | None, args: list[str] = (), port: int | None = None):
        self.data, self.db, self.args = data, db, list(args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "circuit_atlas", "serve", "--data", str(self.data), "--port", str(self.port),
               "--no-browser", *self.args]  # fmt: skip
        if self.db:
            cmd += ["--db", self.db]
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
        self.log = open(self.data.parent / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.read_log()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not start: {self.read_log()}")

    def read_log(self) -> str:
        self.log.flush()
        return (self.data.parent / f"server-{self.port}.log").read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """kill -9: no shutdown handler runs."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)


def postgres_url() -> str | None:
    base = os.environ.get("CIRCUIT_ATLAS_TEST_PG")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("CIRCUIT_ATLAS_TEST_PG is not set in CI: the PostgreSQL server tests must run there")
        pytest.skip("set CIRCUIT_ATLAS_TEST_PG=postgresql+psycopg://... to run the PostgreSQL cases")
    return base


def fresh_postgres(base: str) -> tuple[str, callable]:
    """A new empty database on the server of `base`; returns (its URL, drop function)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"ca_test_{secrets.token_hex(4)}"
    admin = create_engine(make_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def database(kind: str):
    """(url or None for SQLite, cleanup)."""
    if kind == "sqlite":
        return None, lambda: None
    return fresh_postgres(postgres_url())


def upload(client: httpx.Client, path: Path, **params) -> dict:
    r = client.post("/api/graphs", files={"file": (path.name, path.read_bytes())}, params=params)
    assert r.status_code == 201, r.text
    return r.json()
