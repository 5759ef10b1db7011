"""Graph JSON for circuit-tracer's and Neuronpedia's viewers: export (import lives in json_import.py).

Export follows circuit-tracer's conventions (feature `{l}_{f}_{p}` with feature = cantor(l, f),
error `0_{l}_{p}`, embedding `E_{vocab}_{p}`, logit `{L+1}_{vocab}_{T-1}`), except that an id
that collides (an error `0_{l}_{p}` is also the id of layer-0 feature l at position p) is made
unique: the later node (errors come after features) becomes `err_{l}_{p}`, and the renaming is
listed in `metadata.id_collisions`.

Import reads three dialects: circuit-tracer (`schema_version: 1`, Cantor feature ids), older
circuit-tracer / Neuronpedia featured graphs (feature = layer*100000 + index) and Anthropic's
published graphs (opaque ids, no influence/activation keys, errors at layer "0"). In all three
the layer-local feature index is the middle part of the node_id. What the Graph cannot hold
(ids, labels, qParams, the viewer's influence scores) is kept under
`graph.metadata["circuit_tracer_json"]`, so exporting an imported graph with `prune=False`
gives back the same nodes and links.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import tempfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from .graph import EMBEDDING, ERROR, FEATURE, KINDS, LOGIT, Graph
from .influence import logit_weights, node_influence
from .prune import check_threshold, cumulative_influence, prune_masks, subset_graph

SOURCE_KEY = "circuit_tracer_json"
# circuit-tracer writes "cross layer transcoder" for per-layer transcoders too; the viewers expect it
FEATURE_TYPES = {FEATURE: "cross layer transcoder", ERROR: "mlp reconstruction error", EMBEDDING: "embedding",
                 LOGIT: "logit"}  # fmt: skip
# what identifies a model + transcoder set, hashed into the default scan id
_IDENTITY_KEYS = ("model", "architecture", "transcoders", "transcoder_kind", "input_hook", "output_hook", "d_model",
                  "vocab_size")  # fmt: skip
_DEFAULT_QPARAMS = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
_SETTINGS_KEYS = ("max_n_logits", "desired_logit_prob", "batch_size", "max_feature_nodes")


def cantor(a: int, b: int) -> int:
    """Cantor pairing (a + b)(a + b + 1)/2 + b, circuit-tracer's feature id for (layer, index)."""
    return (a + b) * (a + b + 1) // 2 + b


def node_keys(graph: Graph) -> list[str]:
    """A key per node that survives subsetting: kind:layer:position:feature, '#n' for the n-th repeat."""
    seen: Counter[str] = Counter()
    keys = []
    for k, l, p, f in zip(graph.kind.tolist(), graph.layer.tolist(), graph.position.tolist(), graph.feature.tolist()):
        key = f"{KINDS[k]}:{l}:{p}:{f}"
        keys.append(key if seen[key] == 0 else f"{key}#{seen[key]}")
        seen[key] += 1
    return keys


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _version() -> str:
    try:
        from circuit_atlas import __version__

        return str(__version__)
    except ImportError:
        return "unknown"


# --- export ----------------------------------------------------------------------------


def _node_json(kind: int, l: int, p: int, f: int, act: float, n_layers: int, label: str, first_logit: bool) -> dict:
    node = {"feature_type": FEATURE_TYPES[kind], "ctx_idx": p, "token_prob": 0.0, "is_target_logit": False,
            "run_idx": 0, "reverse_ctx_idx": 0, "clerp": "", "activation": None}  # fmt: skip
    if kind == FEATURE:
        node.update(node_id=f"{l}_{f}_{p}", feature=cantor(l, f), layer=str(l), jsNodeId=f"{l}_{f}-0",
                    activation=_num(act))  # fmt: skip
    elif kind == ERROR:
        node.update(node_id=f"0_{l}_{p}", feature=-1, layer=str(l), jsNodeId=f"{l}_{p}-0")
    elif kind == EMBEDDING:
        node.update(node_id=f"E_{f}_{p}", feature=p, layer="E", jsNodeId=f"E_{f}-{p}")
    else:
        node.update(node_id=f"{n_layers + 1}_{f}_{p}", feature=f, layer=str(n_layers + 1), jsNodeId=f"L_{f}-{p}",
                    clerp=f'Output "{label}" (p={act:.3f})', token_prob=_num(act),
                    is_target_logit=first_logit)  # fmt: skip
    return node


def _overlay(node: dict, original: dict, pruned: bool) -> None:
    """Put back what an imported node had: ids, labels, the viewer's influence; drop keys it lacked."""
    for key, value in original.items():
        if key.startswith("_") or key in ("ctx_idx", "activation", "influence"):
            continue
        if key == "token_prob" and node["feature_type"] == "logit" and node.get("token_prob") is not None:
            continue  # the probability column is the live value
        node[key] = value
    if "activation" not in original:
        node.pop("activation", None)
    elif original["activation"] is None:
        node["activation"] = None
    if not pruned:
        if "influence" in original:
            node["influence"] = original["influence"]
        else:
            node.pop("influence", None)


def _unique_ids(nodes: list[dict]) -> list[dict]:
    """Rename repeated node_ids in place (later occurrences); return the renamings."""
    taken = Counter(n["node_id"] for n in nodes)
    seen: set[str] = set()
    renamed = []
    for n in nodes:
        old = n["node_id"]
        if old not in seen:
            seen.add(old)
            continue
        new = f"err_{n['layer']}_{n['ctx_idx']}" if n["feature_type"] == FEATURE_TYPES[ERROR] else f"{old}_dup"
        i = 1
        while new in taken or new in seen:
            new, i = f"{old}_dup{i}", i + 1
        n["node_id"] = new
        seen.add(new)
        renamed.append({"node_id": old, "renamed_to": new, "feature_type": n["feature_type"]})
    return renamed


def viewer_ids(graph: Graph) -> tuple[list[str], list[str], dict[str, str]]:
    """(node_ids, jsNodeIds, {colliding id: the error's new id}) that the export writes for every node
    of `graph` (prune=False), in node order."""
    originals = (graph.metadata.get(SOURCE_KEY) or {}).get("nodes") or {}
    nodes, logit_index = [], 0
    columns = zip(graph.kind.tolist(), graph.layer.tolist(), graph.position.tolist(), graph.feature.tolist())
    for key, (k, l, p, f) in zip(node_keys(graph), columns):
        label = graph.logit_labels[logit_index] if k == LOGIT else ""
        node = _node_json(k, l, p, f, 0.0, graph.n_layers, label, False)
        if key in originals:
            _overlay(node, originals[key], pruned=False)
        nodes.append(node)
        logit_index += k == LOGIT
    renamed = {r["node_id"]: r["renamed_to"] for r in _unique_ids(nodes)}
    return [str(n["node_id"]) for n in nodes], [str(n.get("jsNodeId", "")) for n in nodes], renamed


def _scan(graph: Graph, scan: str | list[str] | tuple[str, ...] | None) -> tuple[str, list[str]]:
    """(scan, transcoder_list). A list of transcoder ids gets a stable 'custom-' hash (never Python's salted hash)."""
    transcoders = graph.metadata.get("transcoder_list")
    transcoders = list(transcoders) if isinstance(transcoders, list) else []
    if isinstance(scan, (list, tuple)):
        digest = hashlib.sha256("-".join(map(str, scan)).encode()).hexdigest()[:16]
        return f"custom-{digest}", [str(s) for s in scan]
    if isinstance(scan, str) and scan:
        return scan, transcoders
    if scan is not None:
        raise ValueError(f"scan must be a non-empty string, a list of transcoder ids or None, got {scan!r}")
    if isinstance(graph.metadata.get("scan"), str):
        return graph.metadata["scan"], transcoders
    if transcoders:
        return _scan(graph, transcoders)
    identity = {k: graph.metadata.get(k) for k in _IDENTITY_KEYS} | {"n_layers": graph.n_layers}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"circuit-atlas-{digest}", transcoders


def _metadata(graph, slug, scan, node_threshold, edge_threshold, prune, source, collisions) -> dict:
    meta = copy.deepcopy(source.get("metadata") or {})
    scan_id, transcoders = _scan(graph, scan)
    meta.update(slug=slug, scan=scan_id, prompt_tokens=list(graph.tokens), prompt=graph.prompt)
    meta.setdefault("transcoder_list", transcoders)
    if prune or "node_threshold" not in meta:
        meta["node_threshold"] = node_threshold
    if not source:
        meta["schema_version"] = 1
    settings = graph.metadata.get("settings") or graph.metadata.get("generation_settings") or {}
    settings = {k: settings[k] for k in _SETTINGS_KEYS if settings.get(k) is not None}
    if settings:
        meta["generation_settings"] = settings
    done = graph.metadata.get("pruning")
    if prune:
        meta["pruning_settings"] = {"node_threshold": node_threshold, "edge_threshold": edge_threshold}
    elif isinstance(done, dict):
        meta["pruning_settings"] = {k: done[k] for k in ("node_threshold", "edge_threshold") if k in done}
    info = meta.setdefault("info", {})
    generator = {"name": "circuit-atlas", "version": _version()}
    info["converted_by" if source else "generator"] = generator
    if collisions:
        meta["id_collisions"] = collisions
    return meta


def to_circuit_tracer_json(
    graph: Graph,
    slug: str,
    *,
    scan: str | list[str] | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    prune: bool = True,
) -> dict[str, Any]:
    """The graph as circuit-tracer/Neuronpedia graph JSON (validates against Neuronpedia's graph schema).

    prune=True prunes with the thresholds first (the usual case, as circuit-tracer does);
    prune=False exports every node and non-zero edge of `graph` as it is. Node "influence" is
    circuit-tracer's cumulative score (smaller = more important), null on logits.
    """
    if not isinstance(slug, str) or not slug:
        raise ValueError(f"slug must be a non-empty string, got {slug!r}")
    node_threshold = check_threshold(node_threshold, "node_threshold")
    edge_threshold = check_threshold(edge_threshold, "edge_threshold")
    source = graph.metadata.get(SOURCE_KEY) or {}
    if prune:
        result = prune_masks(graph, node_threshold, edge_threshold)
        g = subset_graph(graph, result.node_mask, result.edge_mask, result.influence)
        cumulative = result.cumulative[result.node_mask]
    else:
        g = graph
        if graph.influence is not None:  # a pruned graph: rank its raw influences against the unpruned total
            total = (graph.metadata.get("pruning") or {}).get("total_influence")
            cumulative = cumulative_influence(graph.influence, total)
        else:
            w = logit_weights(graph)
            cumulative = cumulative_influence(
                node_influence(graph.csr, graph.row_nodes, graph.n_nodes, w, node_layer=graph.layer)
            )

    originals = source.get("nodes") or {}
    nodes, logit_index = [], 0
    columns = zip(g.kind.tolist(), g.layer.tolist(), g.position.tolist(), g.feature.tolist(), g.activation.tolist())
    for i, (key, (k, l, p, f, act)) in enumerate(zip(node_keys(g), columns)):
        label = g.logit_labels[logit_index] if k == LOGIT else ""
        node = _node_json(k, l, p, f, act, g.n_layers, label, k == LOGIT and logit_index == 0)
        node["influence"] = None if k == LOGIT else _num(float(cumulative[i]))
        if key in originals:
            _overlay(node, originals[key], prune)
        nodes.append(node)
        logit_index += k == LOGIT
    collisions = _unique_ids(nodes)

    ids = [n["node_id"] for n in nodes]
    targets = g.row_nodes[g.csr.row_ids().long()].tolist()  # row-major, as the rows are stored
    links = [{"source": ids[s], "target": ids[t], "weight": float(w)}
             for s, t, w in zip(g.edge_sources.tolist(), targets, g.edge_values.tolist())]  # fmt: skip
    qparams = copy.deepcopy(source.get("qParams") or _DEFAULT_QPARAMS)
    meta = _metadata(g, slug, scan, node_threshold, edge_threshold, prune, source, collisions)
    return {"metadata": meta, "qParams": qparams, "nodes": nodes, "links": links}


def _safe_target(out_dir: Path, slug: str) -> Path:
    """out_dir/<slug>.json, refusing slugs that are absolute or climb out of out_dir."""
    bad = (not isinstance(slug, str) or not slug or "\\" in slug or "\0" in slug or slug.startswith("/")
           or re.match(r"^[A-Za-z]:", slug) is not None or any(p in ("..", ".") for p in PurePosixPath(slug).parts)
           or slug == "graph-metadata" or "//" in slug or slug.endswith("/"))  # fmt: skip
    if bad or not (out_dir / f"{slug}.json").resolve().is_relative_to(out_dir.resolve()):
        raise ValueError(f"unsafe slug {slug!r}: it must be a relative name inside {out_dir} (no '..', not absolute)")
    return out_dir / f"{slug}.json"


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, allow_nan=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_graph_files(graph: Graph, out_dir: str | os.PathLike, slug: str, **kwargs: Any) -> Path:
    """Write `<out_dir>/<slug>.json` and upsert its metadata into `<out_dir>/graph-metadata.json`.

    kwargs go to `to_circuit_tracer_json`. Returns the graph file's path.
    """
    out_dir = Path(out_dir)
    target = _safe_target(out_dir, slug)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = to_circuit_tracer_json(graph, slug, **kwargs)
    index_path = out_dir / "graph-metadata.json"
    index: dict[str, Any] = {"graphs": []}
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{index_path} is not valid JSON ({exc}); fix or remove it") from None
        if not isinstance(index, dict) or not isinstance(index.get("graphs"), list):
            raise ValueError(f'{index_path} is not a graph index (expected {{"graphs": [...]}})')
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(target, data)
    others = [g for g in index["graphs"] if not (isinstance(g, dict) and g.get("slug") == slug)]
    index["graphs"] = others + [data["metadata"]]
    _write_json_atomic(index_path, index)
    return target


# --- import ----------------------------------------------------------------------------
