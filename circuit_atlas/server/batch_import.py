"""Import a `trace-batch` output folder (its manifest.json and graphs) into the library.

Every manifest entry becomes one library row: an ok entry whose file is there, inside the folder
and unchanged (sha256 as recorded) is imported as a graph; a prompt that failed, or a file that is
missing or changed, is listed with state "missing" and the reason, as graph_file_dir entries are.
Rows are named by the entry's own id when the prompts file gave one, else by the prompt, and
tagged `batch:<folder name>`. Importing the folder again adds nothing twice (reuse), and a prompt
that failed before and has a graph now replaces its "missing" row.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from circuit_atlas.attribution.manifest import MANIFEST, file_sha256, read_manifest
from circuit_atlas.attribution.prompts import default_id
from circuit_atlas.graph.graph import Graph

from . import library
from .db import GraphRow
from .security import safe_child


def is_batch_folder(folder: Path) -> bool:
    """A trace-batch folder has a manifest.json and (unlike a graph_file_dir) no graph-metadata.json."""
    return (folder / MANIFEST).is_file() and not (folder / "graph-metadata.json").exists()


def _name(entry: dict) -> str:
    given = entry.get("id")
    if isinstance(given, str) and given != default_id(entry.get("index", -1)):
        return given
    return str(entry.get("prompt") or given or "graph")[:80]


def _problem(folder: Path, entry: dict) -> tuple[Path | None, str]:
    """(graph file, "") when the entry can be imported, else (None, why not)."""
    if entry.get("status") != "ok":
        return None, f"trace-batch failed on this prompt: {entry.get('error') or 'no error recorded'}"
    name = entry.get("file")
    path = safe_child(folder, name) if isinstance(name, str) else None
    if path is None:
        return None, f"file {name!r} is not a file name inside the folder; refused"
    if not path.is_file():
        return None, f"file {name} is missing from the folder"
    if file_sha256(path) != entry.get("sha256"):
        return None, f"file {name} changed since trace-batch wrote it (its sha256 differs); re-run trace-batch"
    return path, ""


def import_batch(session: Session, folder: Path, store, reuse: bool = False) -> list[dict]:
    """Import every entry of the folder's manifest; `store` is the app's (graph, name, tags, source, session, reuse)."""
    data = read_manifest(folder)
    source, tags = f"batch:{folder.name}", [f"batch:{folder.name}"]
    out = []
    for i, entry in enumerate(data["graphs"]):
        if not isinstance(entry, dict):
            raise library.ImportError_(f"{folder / MANIFEST}: graphs[{i}] is not an object")
        name = _name(entry)
        stale = session.scalars(
            select(GraphRow).where(GraphRow.state == "missing", GraphRow.name == name, GraphRow.source == source)
        ).all()
        path, reason = _problem(folder, entry)
        if path is None:
            row = stale[0] if reuse and stale else library.missing_row(session, name, source, entry, reason)
            row.tags = list(tags)  # findable with the batch's graphs (tag=batch:<folder>)
            session.commit()
            out.append(library.summary(row))
            continue
        try:
            graph = Graph.load(str(path))
        except (OSError, ValueError) as exc:
            raise library.ImportError_(f"{path}: not a readable circuit-atlas graph ({exc})") from None
        out.append(store(graph, name, tags, source, session, reuse=reuse))
        for row in stale:  # the prompt failed in an earlier run and has its graph now
            session.delete(row)
        session.commit()
    return out
