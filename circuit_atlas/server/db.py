"""Database: SQLAlchemy 2 tables, the engine and sessions. The schema is owned by the Alembic
migrations in migrations/versions (run at startup); these classes mirror the newest revision.

Label and state edits are append-only rows, so the history is the table itself: the current
label of a key is its newest row, and the current state of a graph is its highest version.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

SCHEMA_HEAD = "0002"
# ids that autoincrement on SQLite (INTEGER PRIMARY KEY) and PostgreSQL (BIGSERIAL) alike
BigId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


class GraphRow(Base):
    __tablename__ = "graphs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(512), default="")
    transcoders: Mapped[str] = mapped_column(String(512), default="")
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    n_nodes: Mapped[int] = mapped_column(Integer, default=0)
    n_links: Mapped[int] = mapped_column(BigInteger, default=0)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    created: Mapped[float] = mapped_column(Float, default=time.time)
    state: Mapped[str] = mapped_column(String(16), default="ok")  # ok | missing
    source: Mapped[str] = mapped_column(Text, default="")
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    search: Mapped[str] = mapped_column(Text, default="")  # lower-cased name + prompt
    updated: Mapped[float | None] = mapped_column(Float, nullable=True)  # revision 0002


class GraphFeature(Base):
    """One row per distinct (layer, feature) of a graph: "graphs containing feature L/F"."""

    __tablename__ = "graph_features"
    graph_id: Mapped[str] = mapped_column(ForeignKey("graphs.id", ondelete="CASCADE"), primary_key=True)
    layer: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    __table_args__ = (Index("ix_graph_features_lf", "layer", "feature"),)


class LabelRow(Base):
    """One label edit. scope feature: scope_key = transcoder set, node_key = "L/F";
    graph: scope_key = graph id, node_key = "L/F"; node: scope_key = graph id, node_key = node id.
    text None = reverted to the automatic label."""

    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(8))
    scope_key: Mapped[str] = mapped_column(String(512))
    node_key: Mapped[str] = mapped_column(String(256))
    graph_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    client: Mapped[str | None] = mapped_column(String(128), nullable=True)
    at: Mapped[float] = mapped_column(Float, default=time.time)
    __table_args__ = (
        Index("ix_labels_key", "scope", "scope_key", "node_key", "id"),
        Index("ix_labels_graph", "graph_id"),
    )


class StateRow(Base):
    """One version of a graph's working state (pins, supernodes, positions, notes, thresholds)."""

    __tablename__ = "states"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    graph_id: Mapped[str] = mapped_column(ForeignKey("graphs.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict] = mapped_column(JSON)
    client: Mapped[str | None] = mapped_column(String(128), nullable=True)
    at: Mapped[float] = mapped_column(Float, default=time.time)
    __table_args__ = (UniqueConstraint("graph_id", "version", name="uq_states_graph_version"),)


class ViewRow(Base):
    """An immutable saved view behind /v/<code>."""

    __tablename__ = "views"
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    graph_id: Mapped[str] = mapped_column(ForeignKey("graphs.id", ondelete="CASCADE"))
    data: Mapped[dict] = mapped_column(JSON)
    created: Mapped[float] = mapped_column(Float, default=time.time)


class JobRow(Base):
    """A live job (revision 0002): request, final state and result."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    graph_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    request: Mapped[dict] = mapped_column(JSON)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[float] = mapped_column(Float, default=time.time)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60}, pool_size=20)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):  # WAL: readers never wait for the writer; FULL: an ack survives kill -9
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision` with the shipped Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
