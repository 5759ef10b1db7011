"""ServerConfig: every setting of `circuit-atlas serve`; each field's doc is its CLI help."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServerConfig:
    data: str = "circuit-atlas-data"
    """data folder: the SQLite database, graph files (content-addressed) and imports/ [circuit-atlas-data]"""
    db: str | None = None
    """SQLAlchemy database URL, e.g. postgresql+psycopg://user@host/db [a SQLite file in the data folder]"""
    host: str = "127.0.0.1"
    """interface to bind; anything but localhost requires a token for writes [127.0.0.1]"""
    port: int = 8765
    """TCP port [8765]"""
    token: str | None = None
    """token every write must carry (Authorization: Bearer TOKEN); generated and printed when bound off localhost"""
    public_reads: bool = False
    """with a token: let reads (GET) through without it"""
    models: list[str] = field(default_factory=list)
    """models to load at start for live jobs (zoo name or directory; loaded on first use otherwise)"""
    transcoders: list[str] = field(default_factory=list)
    """transcoder sets paired with --model, in the same order"""
    max_request_kb: int = 1024
    """largest request body except graph uploads, in KiB (larger: 413) [1024]"""
    max_upload_mb: int = 256
    """largest graph upload, in MiB (larger: 413) [256]"""
    job_concurrency: int = 1
    """live jobs that run at once; the rest wait in a queue [1]"""
    cache_graphs: int = 8
    """graphs kept loaded in memory for view queries [8]"""
    imports: list[str] = field(default_factory=list)
    """graph files, circuit-tracer graph_file_dir folders or trace-batch output folders to import at start"""

    @property
    def data_dir(self) -> Path:
        return Path(self.data).expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.db or f"sqlite:///{self.data_dir / 'circuit-atlas.sqlite'}"

    @property
    def protected(self) -> bool:
        return self.token is not None

    def finalize(self) -> ServerConfig:
        """Check the settings; generate a token when bound off localhost without one."""
        if len(self.models) != len(self.transcoders):
            raise ValueError(
                f"{len(self.models)} --model but {len(self.transcoders)} --transcoders; give them in pairs"
            )
        for name in ("max_request_kb", "max_upload_mb", "job_concurrency", "cache_graphs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.host not in LOCAL_HOSTS and not self.token:
            self.token = secrets.token_urlsafe(24)
        return self


def help_of(name: str) -> str:
    """The field's docstring (read from the source, so the dataclass stays the single place it is written)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(ServerConfig))
    body = tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name:
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                return str(nxt.value.value)
    return ""


FIELDS = [f.name for f in fields(ServerConfig)]
