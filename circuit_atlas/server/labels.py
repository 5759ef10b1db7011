"""Labels at three scopes and the graph's working state, both append-only with history.

Label scopes, most specific first (the first that has a label wins, else the automatic label):
  node    — this node position in this graph            (key: graph id + node id)
  graph   — this feature, every position, in this graph  (key: graph id + "L/F")
  feature — this transcoder feature in every graph of the transcoder set (key: set id + "L/F")
A label's version is its row id (monotonic); reverting writes a row with text NULL.

State (pins, supernodes, positions, notes, thresholds) is versioned per graph. An update names the
version it was based on, and the server merges three ways (base, current, the client's): list
fields apply the client's additions and removals to the current list, supernodes are merged by
label, dict fields (positions, notes) are patches by key, so two clients never lose each other's
edits. A process-wide lock serialises writers (the server is one process).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from .db import LabelRow, StateRow
from .nodes import NodeTable

SCOPES = ("node", "graph", "feature")
MAX_LABEL = 2000
WRITE_LOCK = threading.Lock()
DEFAULT_STATE = {"pinned": [], "supernodes": [], "positions": {}, "notes": {}, "node_threshold": None, "clicked": None, "sg_pos": "",
                 "edge_threshold": None}  # fmt: skip


class Conflict(Exception):
    def __init__(self, message: str, current: Any):
        super().__init__(message)
        self.current = current


def _key(scope: str, gid: str, transcoders: str, nodes: NodeTable, i: int) -> tuple[str, str]:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if scope == "node":
        return gid, nodes.ids[i]
    fk = nodes.feature_key(i)
    if fk is None:
        raise ValueError(f"{nodes.ids[i]} is a {nodes.kinds[i]} node: only features take scope {scope!r}; use 'node'")
    return (gid if scope == "graph" else transcoders), fk


def _applicable(gid: str, transcoders: str):
    return or_(and_(LabelRow.scope == "feature", LabelRow.scope_key == transcoders),
               and_(LabelRow.scope.in_(("graph", "node")), LabelRow.scope_key == gid))  # fmt: skip


def current_labels(session: Session, gid: str, transcoders: str, nodes: NodeTable) -> dict[int, dict]:
    """{node index: {"text", "scope", "version"}} for nodes with a label above the automatic one."""
    newest = (select(func.max(LabelRow.id)).where(_applicable(gid, transcoders))
              .group_by(LabelRow.scope, LabelRow.scope_key, LabelRow.node_key))  # fmt: skip
    rows = session.scalars(select(LabelRow).where(LabelRow.id.in_(newest))).all()
    by_scope: dict[str, dict[str, LabelRow]] = {s: {} for s in SCOPES}
    for r in rows:
        if r.text is not None:
            by_scope[r.scope][r.node_key] = r
    out = {}
    if not rows:
        return out
    for i in range(nodes.n):
        fk = nodes.feature_key(i)
        r = by_scope["node"].get(nodes.ids[i]) or (fk and (by_scope["graph"].get(fk) or by_scope["feature"].get(fk)))
        if r:
            out[i] = {"text": r.text, "scope": r.scope, "version": r.id}
    return out


def latest(session: Session, scope: str, scope_key: str, node_key: str) -> LabelRow | None:
    return session.scalars(select(LabelRow).where(LabelRow.scope == scope, LabelRow.scope_key == scope_key,
                                                  LabelRow.node_key == node_key)
                           .order_by(LabelRow.id.desc()).limit(1)).first()  # fmt: skip


def put_label(session: Session, gid: str, transcoders: str, nodes: NodeTable, i: int, text: str | None,
              scope: str, base_version: int | None = None, client: str | None = None) -> dict:  # fmt: skip
    if text is not None:
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        if len(text) > MAX_LABEL:
            raise ValueError(f"text is {len(text)} characters; labels hold at most {MAX_LABEL}")
    scope_key, node_key = _key(scope, gid, transcoders, nodes, i)
    row = LabelRow(scope=scope, scope_key=scope_key, node_key=node_key, graph_id=gid, node_id=nodes.ids[i],
                   text=text, client=client, at=time.time())  # fmt: skip
    if base_version is None:  # a plain edit only appends: no read, no lock (the row id orders concurrent edits)
        session.add(row)
        session.commit()
    else:
        with WRITE_LOCK:  # check-then-append must not interleave with another checked edit
            cur = latest(session, scope, scope_key, node_key)
            if (cur.id if cur else 0) != base_version:
                raise Conflict(f"the {scope} label of {nodes.ids[i]} changed since version {base_version} "
                               f"(now {cur.id if cur else 0}); reload it and retry", _label_json(cur) if cur else None)  # fmt: skip
            session.add(row)
            session.commit()
    return _label_json(row) | {"node": nodes.ids[i], "auto_label": nodes.auto_labels[i]}


def _label_json(r: LabelRow) -> dict:
    return {"text": r.text, "scope": r.scope, "version": r.id, "at": r.at, "client": r.client, "graph": r.graph_id}


def history(session: Session, gid: str, transcoders: str, nodes: NodeTable, i: int) -> list[dict]:
    """Every edit that applies to node i, oldest first (all three scopes)."""
    keys = [and_(LabelRow.scope == "node", LabelRow.scope_key == gid, LabelRow.node_key == nodes.ids[i])]
    fk = nodes.feature_key(i)
    if fk:
        keys.append(and_(LabelRow.scope == "graph", LabelRow.scope_key == gid, LabelRow.node_key == fk))
        keys.append(and_(LabelRow.scope == "feature", LabelRow.scope_key == transcoders, LabelRow.node_key == fk))
    rows = session.scalars(select(LabelRow).where(or_(*keys)).order_by(LabelRow.id)).all()
    return [_label_json(r) for r in rows]


def graph_history_count(session: Session, gid: str) -> int:
    return int(session.scalar(select(func.count()).select_from(LabelRow).where(LabelRow.graph_id == gid)) or 0)


# --- state -----------------------------------------------------------------------------


def get_state(session: Session, gid: str) -> dict:
    row = session.scalars(select(StateRow).where(StateRow.graph_id == gid).order_by(StateRow.version.desc())
                          .limit(1)).first()  # fmt: skip
    return _state_json(row) if row else DEFAULT_STATE | {"version": 0}


def _state_json(row: StateRow) -> dict:
    return DEFAULT_STATE | dict(row.data) | {"version": row.version, "at": row.at, "client": row.client}


def state_at(session: Session, gid: str, version: int) -> dict | None:
    if version == 0:
        return DEFAULT_STATE | {"version": 0}
    row = session.scalars(select(StateRow).where(StateRow.graph_id == gid, StateRow.version == version)).first()
    return _state_json(row) if row else None


def _merge_list(base: list, cur: list, new: list) -> list:
    added = [x for x in new if x not in base]
    removed = [x for x in base if x not in new]
    return [x for x in cur if x not in removed] + [x for x in added if x not in cur]


def _merge_supernodes(base: list, cur: list, new: list) -> list:
    b = {s[0]: s for s in base}
    n = {s[0]: s for s in new}
    out = {s[0]: s for s in cur}
    for label in set(b) | set(n):
        if b.get(label) != n.get(label):  # the client changed this group: its version wins
            if label in n:
                out[label] = n[label]
            else:
                out.pop(label, None)
    return list(out.values())


def merge(base: dict, cur: dict, patch: dict) -> dict:
    out = {k: cur[k] for k in DEFAULT_STATE}
    for key, value in patch.items():
        if key == "pinned":
            out[key] = _merge_list(base["pinned"], cur["pinned"], value)
        elif key == "supernodes":
            out[key] = _merge_supernodes(base["supernodes"], cur["supernodes"], value)
        elif key in ("positions", "notes"):
            merged = dict(cur[key])
            for k, v in value.items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
            out[key] = merged
        else:
            out[key] = value
    return out


def put_state(session: Session, gid: str, patch: dict, base_version: int | None, client: str | None,
              replace: bool = False) -> dict:  # fmt: skip
    """A new state version: `patch` merged into the current one (replace=True: exactly `patch`, for restore)."""
    with WRITE_LOCK:
        cur = get_state(session, gid)
        base = cur if base_version is None else state_at(session, gid, base_version)
        if base is None:
            raise ValueError(f"base_version {base_version} does not exist (current version is {cur['version']})")
        data = {k: patch.get(k, v) for k, v in DEFAULT_STATE.items()} if replace else merge(base, cur, patch)
        row = StateRow(graph_id=gid, version=cur["version"] + 1, data=data, client=client, at=time.time())
        session.add(row)
        session.commit()
    return _state_json(row)


def state_history(session: Session, gid: str) -> list[dict]:
    rows = session.scalars(select(StateRow).where(StateRow.graph_id == gid).order_by(StateRow.version)).all()
    return [_state_json(r) for r in rows]
