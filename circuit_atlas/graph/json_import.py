"""Import of attribution-graph JSON from the field (circuit-tracer, Neuronpedia, Anthropic).

Three dialects: circuit-tracer (`schema_version: 1`, Cantor feature ids), older circuit-tracer /
Neuronpedia featured graphs (feature = layer*100000 + index) and Anthropic's published graphs
(opaque ids, no influence/activation keys, errors at layer "0"). In all three the layer-local
feature index is the middle part of the node_id. What the Graph cannot hold (ids, labels,
qParams, the viewer's influence scores) is kept under `graph.metadata["circuit_tracer_json"]`,
so exporting an imported graph with `prune=False` gives back the same nodes and links.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch

from .export import SOURCE_KEY, node_keys
from .graph import EMBEDDING, ERROR, FEATURE, LOGIT, Graph
from .sparse import CSR

_OUTPUT_RE = re.compile(r'^.*output:?\s*"(.*)"\s*\(p\s*=\s*([-+0-9.eE]+)\)\s*$', re.IGNORECASE | re.DOTALL)
_PROB_RE = re.compile(r"\(p\s*=\s*([-+0-9.eE]+)\)")


def parse_logit_clerp(clerp: str) -> tuple[str | None, float | None]:
    '''(token, probability) from labels like `Output " Austin" (p=0.316)`, `output: "Austin" (p=0.984)`,
    `Output """ (p=0.122)` or `[Output "big" or "large"] Output "large" (p=0.420)` (the last one wins).'''
    m = _OUTPUT_RE.match(clerp or "")
    if m:
        try:
            return m.group(1), float(m.group(2))
        except ValueError:
            return m.group(1), None
    probs = _PROB_RE.findall(clerp or "")
    try:
        return None, float(probs[-1]) if probs else None
    except ValueError:
        return None, None


def _stable_int(text: str) -> int:
    """A stable non-negative 62-bit integer for an opaque id (never Python's salted hash)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 2


def _int(value: Any, what: str, where: str) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {what} {value!r} is not an integer") from None


def _dialect(meta: dict, nodes: list[dict]) -> str:
    """'circuit-tracer' (schema_version 1, Cantor ids), 'anthropic' (opaque ids) or 'legacy' (layer*100000 + index)."""
    if meta.get("schema_version") == 1:
        return "circuit-tracer"
    feats = [n for n in nodes if "transcoder" in str(n.get("feature_type", "")).lower()]
    deep = [n for n in feats if str(n.get("layer")) not in ("0", "E")]
    if deep and all(str(n.get("node_id", "")).split("_")[1:2] == [str(n.get("feature"))] for n in deep):
        return "anthropic"  # feature == the id's middle part even above layer 0: no layer is encoded
    if nodes and not any("influence" in n or "activation" in n for n in nodes):
        return "anthropic"
    return "legacy"


def _parse_node(n: Any, i: int, dialect: str, where: str, warnings: list[str]) -> tuple:
    """(kind, layer, position, feature, activation, logit label, opaque feature id) of one JSON node."""
    if not isinstance(n, dict) or "node_id" not in n or "ctx_idx" not in n:
        raise ValueError(f"{where}: node {i} is not an object with node_id and ctx_idx")
    nid = str(n["node_id"])
    parts = nid.split("_")
    middle = parts[1] if len(parts) == 3 else None
    numeric = middle is not None and middle.lstrip("-").isdigit()
    ft = str(n.get("feature_type", "")).lower()
    kind = ERROR if "error" in ft else EMBEDDING if "embed" in ft else LOGIT if "logit" in ft else FEATURE
    if kind == FEATURE and "transcoder" not in ft:
        warnings.append(f"node {nid!r}: unknown feature_type {ft!r}, read as a feature")
    pos = _int(n["ctx_idx"], f"ctx_idx of node {nid!r}", where)
    layer = -1 if kind == EMBEDDING else _int(n.get("layer"), f"layer of node {nid!r}", where)
    activation, label, opaque = 0.0, None, None
    if kind == FEATURE:
        feature = int(middle) if numeric else _stable_int(nid)
        if dialect == "anthropic" or not numeric:
            opaque = middle if middle is not None else nid
        activation = float(n["activation"]) if n.get("activation") is not None else 0.0
    elif kind == ERROR:
        feature = -1
    elif kind == EMBEDDING:
        feature = int(middle) if numeric and parts[0] == "E" else -1
    else:
        token, clerp_prob = parse_logit_clerp(str(n.get("clerp", "")))
        raw = n.get("feature")
        feature = raw if isinstance(raw, int) and not isinstance(raw, bool) else int(middle) if numeric else -1
        prob = n.get("token_prob")
        activation = float(prob) if prob is not None else clerp_prob if clerp_prob is not None else 0.0
        label = token if token is not None else nid
    return kind, layer, pos, feature, activation, label, opaque


def _load_json(source: str | os.PathLike | dict) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "graph JSON"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no graph JSON at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    return data, str(path)


def _sources_by_run(links: list, by_id: dict[str, list[int]], parsed: list[tuple]) -> list[int | None]:
    """For each link whose source id names several nodes (a layer-0 feature `0_{f}_{p}` and an error
    `0_{l}_{p}` can share one), the one node its place in its target's run allows, else None.

    circuit-tracer and Neuronpedia write each target's incoming links as one consecutive run with the
    sources in node-list order, so a link's source must lie after the previous link's source and
    before the next unambiguous one. Files that do not follow that order simply get None here."""
    out: list[int | None] = [None] * len(links)
    cands = [[j for j in by_id.get(str(l.get("source")), []) if parsed[j][0] != LOGIT] if isinstance(l, dict) else []
             for l in links]  # fmt: skip
    if not any(len(c) > 1 for c in cands):
        return out
    i, n = 0, len(links)
    while i < n:
        target = links[i].get("target") if isinstance(links[i], dict) else None
        j = i
        while j < n and isinstance(links[j], dict) and links[j].get("target") == target:
            j += 1
        j = max(j, i + 1)
        fixed = [c[0] if len(c) == 1 else None for c in cands[i:j]]
        for k in range(j - i):
            if fixed[k] is None and len(cands[i + k]) > 1:
                lo = max((f for f in fixed[:k] if f is not None), default=-1)
                hi = min((f for f in fixed[k + 1 :] if f is not None), default=len(parsed))
                fit = [c for c in cands[i + k] if lo < c < hi]
                if len(fit) == 1:
                    fixed[k] = out[i + k] = fit[0]
        i = j
    return out


def from_circuit_tracer_json(source: str | os.PathLike | dict) -> Graph:
    """Read a circuit-tracer / Neuronpedia / Anthropic graph JSON (a path or the parsed dict) into a Graph.

    Nodes are keyed by their list index, never by node_id, so colliding ids keep both nodes (and a
    warning goes to metadata["import_warnings"]). A link naming a repeated id is resolved by role
    first (a target must be a node that can take input: a feature or logit; a source cannot be a
    logit), then by its place in its target's run of links (sources come in node order, see
    `_sources_by_run`), and only where that leaves a choice, by order: the k-th occurrence of a (source, target) id pair goes to the k-th
    candidate pair in list order, which matches how circuit-tracer emits the duplicate links that
    follow a collision. Links that still repeat have their weights summed (with a warning).
    Rows are the nodes with incoming links; the viewer's influence scores are kept in metadata,
    not in `graph.influence` (they are cumulative scores, not raw influence).
    """
    data, where = _load_json(source)
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not isinstance(data.get("links"), list):
        raise ValueError(f"{where} is not a graph JSON (expected an object with 'nodes' and 'links' lists)")
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    nodes, warnings = data["nodes"], []
    dialect = _dialect(meta, nodes)
    parsed = [_parse_node(n, i, dialect, where, warnings) for i, n in enumerate(nodes)]

    # canonical node order: features (layer, pos, feature), errors (layer, pos), embeddings (pos), logits (file order)
    def rank(j: int) -> tuple:
        k, l, p, f = parsed[j][:4]
        if k == FEATURE:
            return (k, l, p, f, j)
        return (k, l, p, 0, j) if k == ERROR else (k, 0, p if k == EMBEDDING else 0, 0, j)

    order = sorted(range(len(nodes)), key=rank)
    canon = [0] * len(nodes)
    for c, j in enumerate(order):
        canon[j] = c

    by_id: dict[str, list[int]] = defaultdict(list)
    for j, n in enumerate(nodes):
        by_id[str(n["node_id"])].append(j)
    for nid, js in by_id.items():
        if len(js) > 1:
            warnings.append(f"node_id {nid!r} is shared by {len(js)} nodes (list indices {js}); all are kept")
    values: dict[tuple[int, int], float] = {}
    seen_pairs: Counter[tuple[str, str]] = Counter()
    problems: Counter[str] = Counter()
    by_run = _sources_by_run(data["links"], by_id, parsed)
    for li, link in enumerate(data["links"]):
        s_id, t_id = str(link.get("source")), str(link.get("target"))
        srcs = [j for j in by_id.get(s_id, []) if parsed[j][0] != LOGIT]
        if by_run[li] is not None:
            srcs = [by_run[li]]
        tgts = by_id.get(t_id, [])
        tgts = [j for j in tgts if parsed[j][0] in (FEATURE, LOGIT)] or tgts
        pairs = [(a, b) for a in srcs for b in tgts if a != b]
        if not pairs:
            problems["links skipped (unknown node, self-loop or a logit as source)"] += 1
            continue
        a, b = pairs[min(seen_pairs[(s_id, t_id)], len(pairs) - 1)]
        seen_pairs[(s_id, t_id)] += 1
        key = (canon[b], canon[a])
        if key in values:
            problems["repeated links (weights summed)"] += 1
        try:
            values[key] = values.get(key, 0.0) + float(link["weight"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: link {s_id} -> {t_id} has no numeric weight") from None
    warnings += [f"{count} {what}" for what, count in problems.items()]

    cols = list(zip(*[parsed[j] for j in order])) if nodes else [()] * 7
    kind, layer, pos, feature, activation, labels, _ = cols
    body = [l for k, l in zip(kind, layer) if k in (FEATURE, ERROR)]
    logit_layers = [l for k, l in zip(kind, layer) if k == LOGIT]
    n_layers = max(max(logit_layers, default=1) - 1, max(body, default=-1) + 1)  # logits sit at layer L + 1
    tokens = [str(t) for t in meta.get("prompt_tokens") or []]
    tokens += [""] * (max(pos, default=-1) + 1 - len(tokens))
    input_ids = torch.full((len(tokens),), -1, dtype=torch.long)
    for k, p, f in zip(kind, pos, feature):
        if k == EMBEDDING and f >= 0:
            input_ids[p] = f
    layer = [n_layers if k == LOGIT else l for k, l in zip(kind, layer)]
    row_list = sorted({t for t, _ in values})
    row_of = {t: r for r, t in enumerate(row_list)}
    n_sources = sum(k != LOGIT for k in kind)
    edges = CSR.from_coo(
        torch.tensor([row_of[t] for t, _ in values], dtype=torch.long),
        torch.tensor([s for _, s in values], dtype=torch.long),
        torch.tensor(list(values.values()), dtype=torch.float32),
        len(row_list),
        n_sources,
    )

    graph = Graph(
        prompt=str(meta.get("prompt", "")), input_ids=input_ids, tokens=tokens, n_layers=n_layers,
        kind=torch.tensor(kind, dtype=torch.int8), layer=torch.tensor(layer, dtype=torch.long),
        position=torch.tensor(pos, dtype=torch.long), feature=torch.tensor(feature, dtype=torch.long),
        activation=torch.tensor(activation, dtype=torch.float32),
        edge_indptr=edges.indptr, edge_sources=edges.sources, edge_values=edges.values,
        row_nodes=torch.tensor(row_list, dtype=torch.long),
        logit_labels=[l for k, l in zip(kind, labels) if k == LOGIT],
    )  # fmt: skip
    originals = {}
    for key, j in zip(node_keys(graph), order):
        originals[key] = dict(nodes[j]) | ({"_opaque_feature": parsed[j][6]} if parsed[j][6] is not None else {})
    graph.metadata = {
        "source_format": "circuit-tracer-json",
        "dialect": dialect,
        "scan": meta.get("scan"),
        "slug": meta.get("slug"),
        "transcoder_list": list(meta.get("transcoder_list") or []),
        "targets": [
            {"label": l, "token_id": f, "probability": a, "custom": False}
            for k, l, f, a in zip(kind, labels, feature, activation)
            if k == LOGIT
        ],  # fmt: skip
        "import_warnings": warnings,
        SOURCE_KEY: {"metadata": meta, "qParams": data.get("qParams"), "nodes": originals},
    }
    return graph
