"""Saved views (immutable, short code, /v/<code>) and the long "state in the URL" form.

A view is {pinned, supernodes, labels, node_threshold, edge_threshold, positions, clicked} in our
node ids. Neuronpedia / circuit-tracer URL parameters (slug, pinnedIds, supernodes, clerps,
pruningThreshold, clickedId, sg_pos) and imported qParams are translated into the same form,
whatever id dialect they use (a circuit-tracer clerps key that is a feature number labels every position
of that feature); unknown ids are one 422 that lists them.
"""

from __future__ import annotations

import json
import math
import secrets
import string
import time
from typing import Any

from sqlalchemy.orm import Session

from .db import ViewRow
from .nodes import NodeTable

CODE_ALPHABET = string.ascii_letters + string.digits
CODE_LENGTH = 8
MAX_NOTE = 10000


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def _ids(nodes: NodeTable, raw: Any, where: str, problems: list[str]) -> list[str]:
    if isinstance(raw, str):
        raw = [x for x in raw.split(",") if x.strip()]
    if not isinstance(raw, list):
        raise ValueError(f"{where} must be a list of node ids, got {type(raw).__name__}")
    out = []
    for x in raw:
        try:
            out.append(nodes.ids[nodes.resolve(str(x))])
        except KeyError:
            problems.append(f"{where}: {x!r}")
    return out


def _threshold(value: Any, where: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number in (0, 1], got {value!r}") from None
    if not (math.isfinite(v) and 0 < v <= 1):
        raise ValueError(f"{where} must be a number in (0, 1], got {value!r}")
    return v


def _json_param(value: Any, where: str) -> Any:
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} is not valid JSON ({exc})") from None
    return value


def normalize_state(nodes: NodeTable, patch: dict, *, strict: bool = True) -> tuple[dict, list[str]]:
    """Validate a (partial) state/view body and translate every id to ours. Returns (state, unknown ids)."""
    if not isinstance(patch, dict):
        raise ValueError("the state must be a JSON object")
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if key == "pinned":
            out["pinned"] = list(dict.fromkeys(_ids(nodes, value, "pinned", problems)))
        elif key == "supernodes":
            value = _json_param(value, "supernodes")
            if not isinstance(value, list):
                raise ValueError("supernodes must be a list of [label, node id, ...] lists")
            groups, seen = [], set()
            for i, entry in enumerate(value):
                if not (isinstance(entry, list) and entry and all(isinstance(x, str) for x in entry)):
                    raise ValueError(f"supernodes[{i}] must be [label, node id, ...] strings, got {json.dumps(entry)}")
                label = entry[0]
                while label in seen:
                    label += "'"
                seen.add(label)
                groups.append([label] + list(dict.fromkeys(_ids(nodes, entry[1:], f"supernodes[{i}]", problems))))
            out["supernodes"] = groups
        elif key in ("positions", "notes"):
            if not isinstance(value, dict):
                raise ValueError(f"{key} must be an object keyed by node or supernode id")
            for k, v in value.items():
                if (
                    key == "positions"
                    and v is not None
                    and not (isinstance(v, list) and len(v) == 2 and all(isinstance(c, (int, float)) for c in v))
                ):
                    raise ValueError(f"positions[{k!r}] must be [x, y] numbers or null, got {json.dumps(v)}")
                if key == "notes" and v is not None and not (isinstance(v, str) and len(v) <= MAX_NOTE):
                    raise ValueError(f"notes[{k!r}] must be a string of at most {MAX_NOTE} characters or null")
            out[key] = dict(value)
        elif key in ("node_threshold", "edge_threshold"):
            out[key] = _threshold(value, key)
        elif key == "clicked":
            out[key] = _ids(nodes, [value], "clicked", problems)[0] if value else None
        elif key == "labels":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ValueError("labels must be an object {node id: label text}")
            labels = {}
            for k, v in value.items():
                got = _ids(nodes, [k], "labels", problems)
                if got:
                    labels[got[0]] = v
            out["labels"] = labels
        elif key == "sg_pos":
            out[key] = str(value)
        elif key in ("base_version", "client"):
            continue
        else:
            raise ValueError(f"unknown state field {key!r} (fields: pinned, supernodes, positions, notes, "
                             "node_threshold, edge_threshold, clicked, labels, sg_pos)")  # fmt: skip
    if problems and strict:
        shown = "; ".join(problems[:20]) + (f"; ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ValueError(f"{len(problems)} node id(s) are not in this graph: {shown}")
    return out, problems


def from_url_params(nodes: NodeTable, params: dict[str, Any], *, strict: bool = True) -> tuple[dict, list[str]]:
    """Neuronpedia / circuit-tracer URL parameters (or a graph's qParams) -> a view in our ids."""
    body: dict[str, Any] = {}
    if params.get("pinnedIds"):
        body["pinned"] = params["pinnedIds"]
    if params.get("supernodes"):
        body["supernodes"] = params["supernodes"]
    if params.get("clickedId"):
        body["clicked"] = params["clickedId"]
    if params.get("sg_pos"):
        body["sg_pos"] = params["sg_pos"]
    threshold = params.get("pruningThreshold")
    if threshold not in (None, ""):
        body["node_threshold"] = threshold
    clerps = _json_param(params.get("clerps") or [], "clerps")
    if isinstance(clerps, dict):
        clerps = list(clerps.items())
    if not isinstance(clerps, list):
        raise ValueError("clerps must be a JSON list of [node id, label] pairs")
    labels = {}
    for i, pair in enumerate(clerps):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
            raise ValueError(f"clerps[{i}] must be a [node id, label] pair, got {json.dumps(pair)}")
        key = str(pair[0])
        if key not in nodes.index and key not in nodes.aliases and key in nodes.feature_numbers:
            for j in nodes.feature_numbers[key]:  # circuit-tracer: a feature number labels every position
                labels[nodes.ids[j]] = pair[1]
        else:
            labels[key] = pair[1]
    if labels:
        body["labels"] = labels
    return normalize_state(nodes, body, strict=strict)


def create_view(session: Session, gid: str, data: dict) -> ViewRow:
    for _ in range(10):
        code = new_code()
        if session.get(ViewRow, code) is None:
            row = ViewRow(code=code, graph_id=gid, data=data, created=time.time())
            session.add(row)
            session.commit()
            return row
    raise RuntimeError("could not find a free view code")


def view_json(row: ViewRow) -> dict:
    return dict(row.data) | {"code": row.code, "graph": row.graph_id, "url": f"/v/{row.code}", "created": row.created}
