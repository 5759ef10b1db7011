"""The graph library: import (our .safetensors, graph JSON in all three dialects, circuit-tracer
graph_file_dir folders), content-addressed storage, list/search, rename/tag, delete.

Storage: the engine's own file at data/graphs/<sha256>.safetensors (two imports of the same graph
share it) and beside it <sha256>.influence.safetensors, the node influence computed once at
import. Metadata and search fields live in the database. An import writes the files first and
the rows in one transaction; if anything fails, the rows roll back and new files are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from circuit_atlas.graph.export import _scan
from circuit_atlas.graph.graph import FEATURE, Graph

from .db import GraphFeature, GraphRow, LabelRow, StateRow, ViewRow
from .security import safe_child
from .sparse import SparseGraph, cumulative, scores

INFLUENCE_FORMAT = {"format": "circuit-atlas-influence", "version": "1"}
SCHEMA_PATH = Path(__file__).parent / "schemas" / "graph-schema.json"


class ImportError_(ValueError):
    """An import that cannot proceed; the message says which field or file and how to fix it."""


def graph_dir(data_dir: Path) -> Path:
    d = data_dir / "graphs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def graph_path(data_dir: Path, sha: str) -> Path:
    return graph_dir(data_dir) / f"{sha}.safetensors"


def influence_path(data_dir: Path, sha: str) -> Path:
    return graph_dir(data_dir) / f"{sha}.influence.safetensors"


def load_influence(data_dir: Path, sha: str) -> np.ndarray | None:
    path = influence_path(data_dir, sha)
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        if (f.metadata() or {}).get("format") != INFLUENCE_FORMAT["format"]:
            return None
        return f.get_tensor("influence").numpy().astype(np.float64)


# --- validation ------------------------------------------------------------------------

_validator = None


def validate_graph_json(data: Any) -> None:
    """Check graph JSON against Neuronpedia's graph schema; one error naming the field."""
    global _validator
    if _validator is None:
        import jsonschema

        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        _validator = jsonschema.Draft7Validator(schema)
    error = next(iter(sorted(_validator.iter_errors(data), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        raise ImportError_(f"graph JSON field {where or '(top level)'}: {error.message}")


def parse_upload(raw: bytes, filename: str = "") -> tuple[Graph, str]:
    """(Graph, format) from uploaded bytes: a .safetensors graph or graph JSON."""
    if raw[:1] == b"{" or filename.endswith(".json"):
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ImportError_(
                f"the upload is not valid JSON ({exc}); send graph JSON or a .safetensors graph"
            ) from None
        return graph_from_json(data), "json"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.safetensors"
        path.write_bytes(raw)
        try:
            return Graph.load(str(path)), "safetensors"
        except Exception as exc:  # a corrupt file must answer 400, never 500
            raise ImportError_(
                f"the upload is neither graph JSON nor a circuit-atlas .safetensors graph ({exc})"
            ) from None


def graph_from_json(data: Any) -> Graph:
    validate_graph_json(data)
    try:
        return Graph.from_json(data)
    except ValueError as exc:
        raise ImportError_(str(exc)) from None


# --- storing ---------------------------------------------------------------------------


def _write_content_addressed(graph: Graph, data_dir: Path) -> tuple[str, bool]:
    """Save the graph under its sha256; returns (sha, created_now)."""
    folder = graph_dir(data_dir)
    fd, tmp = tempfile.mkstemp(prefix=".import.", suffix=".safetensors", dir=folder)
    os.close(fd)
    try:
        graph.save(tmp)
        digest = hashlib.sha256()
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        sha = digest.hexdigest()
        target = graph_path(data_dir, sha)
        if target.exists():
            return sha, False
        os.replace(tmp, target)
        return sha, True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_influence(data_dir: Path, sha: str, influence: np.ndarray) -> None:
    path = influence_path(data_dir, sha)
    tmp = path.with_suffix(".tmp")
    save_file({"influence": torch.from_numpy(influence.astype(np.float32))}, str(tmp), metadata=INFLUENCE_FORMAT)
    os.replace(tmp, path)


def _default_threshold(meta: dict) -> float:
    value = meta.get("node_threshold")
    return float(value) if isinstance(value, (int, float)) and 0 < value <= 1 else 0.8


def transcoder_set(graph: Graph) -> str:
    """The graph's transcoder set id: the one feature-scope labels are keyed by (the export's `scan`)."""
    return _scan(graph, None)[0]


def store_graph(session: Session, data_dir: Path, graph: Graph, *, name: str | None = None,
                tags: list[str] | None = None, source: str = "", model: str | None = None,
                reuse: bool = False) -> GraphRow:  # fmt: skip
    """Write the graph's files and rows (one transaction). Returns the row (flushed, not committed).

    reuse=True: if a graph with the same file and name is already in the library, return it instead
    (start-up imports and the demo run again on every start)."""
    sha, created = _write_content_addressed(graph, data_dir)
    if reuse and not created and name:
        same = session.scalars(
            select(GraphRow).where(GraphRow.sha256 == sha, GraphRow.name == name.strip()[:500])
        ).first()
        if same is not None:
            return same
    try:
        sparse = SparseGraph.from_graph(graph)
        influence = sparse.influence()
        if created or not influence_path(data_dir, sha).exists():
            _write_influence(data_dir, sha, influence)
        meta_src = (graph.metadata.get("circuit_tracer_json") or {}).get("metadata") or {}
        kinds = graph.kind.numpy()
        meta = {
            "tokens": list(graph.tokens),
            "n_layers": graph.n_layers,
            "scores": scores(sparse),
            "node_threshold": _default_threshold(meta_src),
            "edge_threshold": 0.98,
            "slug": graph.metadata.get("slug") or meta_src.get("slug"),
            "dialect": graph.metadata.get("dialect", "circuit-atlas"),
            # what a person calls the set (the `transcoders` column is the scan id labels are keyed by)
            "transcoder_name": str(graph.metadata.get("transcoders") or meta_src.get("scan") or ""),
            "import_warnings": list(graph.metadata.get("import_warnings") or []),
            "counts": {k: int((kinds == i).sum()) for i, k in enumerate(("feature", "error", "embedding", "logit"))},
            "max_cumulative_influence": float(cumulative(influence).max(initial=0.0)),
        }
        model_name = model or str(meta_src.get("scan") or graph.metadata.get("model") or "")
        name = (name or meta["slug"] or graph.prompt[:80] or "graph").strip()[:500]
        gid = secrets.token_hex(6)
        row = GraphRow(id=gid, name=name, prompt=graph.prompt, model=model_name[:512],
                       transcoders=transcoder_set(graph)[:512], sha256=sha, n_nodes=graph.n_nodes,
                       n_links=int(sparse.t.size), tags=list(tags or []), created=time.time(), state="ok",
                       source=source, meta=meta, search=f"{name}\n{graph.prompt}".lower(),
                       updated=time.time())  # fmt: skip
        session.add(row)
        feats = graph.kind == FEATURE
        pairs = sorted(set(zip(graph.layer[feats].tolist(), graph.feature[feats].tolist())))
        session.flush()
        session.add_all([GraphFeature(graph_id=gid, layer=l, feature=f) for l, f in pairs])
        session.flush()
        return row
    except BaseException:
        session.rollback()
        if created:
            graph_path(data_dir, sha).unlink(missing_ok=True)
            influence_path(data_dir, sha).unlink(missing_ok=True)
        raise


def missing_row(session: Session, name: str, source: str, entry: dict, reason: str) -> GraphRow:
    """An index entry whose file is missing (or unsafe): listed with state 'missing' and the reason."""
    tokens = entry.get("prompt_tokens") if isinstance(entry.get("prompt_tokens"), list) else []
    row = GraphRow(id=secrets.token_hex(6), name=name[:500], prompt=str(entry.get("prompt", "")),
                   model=str(entry.get("scan", ""))[:512], transcoders=str(entry.get("scan", ""))[:512], sha256=None,
                   n_nodes=0, n_links=0, tags=[], created=time.time(), state="missing", source=source,
                   meta={"missing_reason": reason, "tokens": [str(t) for t in tokens], "slug": entry.get("slug")},
                   search=f"{name}\n{entry.get('prompt', '')}".lower(), updated=time.time())  # fmt: skip
    session.add(row)
    session.flush()
    return row


def read_graph_dir(folder: Path) -> list[tuple[str, Path | None, dict, str]]:
    """Entries of a circuit-tracer graph_file_dir: (slug, file or None, index entry, reason if missing).

    A slug is joined to the folder only if the result stays inside it: `..`, absolute paths,
    percent-encoded dots and symlinks out of the folder all make the entry 'missing'."""
    index_path = folder / "graph-metadata.json"
    if not index_path.is_file():
        raise ImportError_(f"{folder} has no graph-metadata.json; a graph_file_dir folder needs one")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportError_(f"{index_path} is not valid JSON ({exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("graphs"), list):
        raise ImportError_(f'{index_path} is not a graph index (expected {{"graphs": [...]}})')
    out = []
    for i, entry in enumerate(index["graphs"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("slug"), str) or not entry["slug"]:
            raise ImportError_(f"{index_path}: graphs[{i}] has no slug string")
        slug = entry["slug"]
        path = safe_child(folder, f"{slug}.json")
        if path is None:
            out.append((slug, None, entry, f"slug {slug!r} points outside the folder; refused"))
        elif not path.is_file():
            out.append((slug, None, entry, f"file {slug}.json is missing from the folder"))
        else:
            out.append((slug, path, entry, ""))
    return out


# --- queries ---------------------------------------------------------------------------


def summary(row: GraphRow) -> dict:
    return {"id": row.id, "name": row.name, "prompt": row.prompt, "model": row.model,
            "transcoders": row.transcoders, "n_nodes": row.n_nodes, "n_links": row.n_links,
            "tags": list(row.tags or []), "created": row.created, "updated": row.updated, "state": row.state,
            "transcoder_name": (row.meta or {}).get("transcoder_name") or row.transcoders,
            "missing_reason": (row.meta or {}).get("missing_reason")}  # fmt: skip


def list_graphs(session: Session, q: str = "", model: str = "", transcoders: str = "", feature: str = "",
                tag: str = "") -> list[GraphRow]:  # fmt: skip
    stmt = select(GraphRow)
    if q:
        like = f"%{q.lower()}%"
        labelled = select(LabelRow.graph_id).where(func.lower(LabelRow.text).like(like))
        stmt = stmt.where(or_(GraphRow.search.like(like), GraphRow.id.in_(labelled)))
    if model:
        stmt = stmt.where(GraphRow.model == model)
    if transcoders:
        stmt = stmt.where(GraphRow.transcoders == transcoders)
    if feature:
        layer, index = parse_feature(feature)
        has = select(GraphFeature.graph_id).where(GraphFeature.layer == layer, GraphFeature.feature == index)
        stmt = stmt.where(GraphRow.id.in_(has))
    rows = session.scalars(stmt.order_by(GraphRow.created.desc())).all()
    if tag:
        rows = [r for r in rows if tag in (r.tags or [])]
    return list(rows)


def parse_feature(text: str) -> tuple[int, int]:
    parts = text.replace(":", "/").split("/")
    if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise ValueError(f"feature must be LAYER/FEATURE such as 3/120, got {text!r}")
    return int(parts[0]), int(parts[1])


def delete_graph(session: Session, data_dir: Path, row: GraphRow) -> None:
    """Delete the graph's rows; its files go too unless another graph shares them."""
    sha = row.sha256
    gid = row.id
    for table in (GraphFeature, StateRow, ViewRow):
        session.execute(delete(table).where(table.graph_id == gid))
    session.execute(delete(LabelRow).where(LabelRow.scope != "feature", LabelRow.scope_key == gid))
    session.delete(row)
    session.flush()
    if sha and not session.scalar(select(func.count()).select_from(GraphRow).where(GraphRow.sha256 == sha)):
        graph_path(data_dir, sha).unlink(missing_ok=True)
        influence_path(data_dir, sha).unlink(missing_ok=True)
