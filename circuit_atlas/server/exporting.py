"""Export: graph JSON (circuit-tracer / Neuronpedia, valid against graph-schema.json) with the current
labels in `clerp` and the view in `qParams`, and CSV of nodes and edges."""

from __future__ import annotations

import csv
import io

from .views import LoadedGraph

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def graph_json(lg: LoadedGraph, slug: str, labels: dict[int, dict], state: dict) -> dict:
    """Every node and edge (prune=False), so the file re-imports to the same nodes and links."""
    data = lg.graph.to_json(slug, prune=False)
    ids = [n["node_id"] for n in data["nodes"]]  # export order = node order; colliding ids already renamed
    ours = {nid: i for i, nid in enumerate(lg.nodes.ids)}
    for i, entry in labels.items():
        data["nodes"][i]["clerp"] = entry["text"]

    def exported(our_id: str) -> str | None:
        i = ours.get(our_id)
        return ids[i] if i is not None else None

    pinned = [x for x in map(exported, state.get("pinned") or []) if x]
    supernodes = [[g[0]] + [x for x in map(exported, g[1:]) if x] for g in state.get("supernodes") or []]
    q = dict(data.get("qParams") or {})
    q.update(pinnedIds=pinned, supernodes=supernodes, linkType=q.get("linkType") or "both",
             clickedId=exported(state.get("clicked") or "") or "", sg_pos=state.get("sg_pos") or "",
             clerps=[[ids[i], e["text"]] for i, e in sorted(labels.items())])  # fmt: skip
    if state.get("node_threshold"):
        q["pruningThreshold"] = state["node_threshold"]
    data["qParams"] = q
    return data


def _text(value: str) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas; a leading ' keeps labels as data."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def nodes_csv(lg: LoadedGraph, labels: dict[int, dict]) -> str:
    nt, buf = lg.nodes, io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "viewer_id", "kind", "layer", "position", "feature", "token", "activation", "influence",
                "label", "label_scope", "auto_label"])  # fmt: skip
    for i in range(nt.n):
        label = labels.get(i)
        w.writerow([nt.ids[i], nt.np_ids[i], nt.kinds[i], nt.layer[i], nt.position[i], nt.feature[i],
                    _text(nt.token[i]), nt.activation[i], float(lg.influence[i]),
                    _text(label["text"] if label else nt.auto_labels[i]), label["scope"] if label else "auto",
                    _text(nt.auto_labels[i])])  # fmt: skip
    return buf.getvalue()


def edges_csv(lg: LoadedGraph) -> str:
    g, ids, buf = lg.sparse, lg.nodes.ids, io.StringIO()
    w = csv.writer(buf)
    w.writerow(["source", "target", "weight"])
    for s, t, x in zip(g.s.tolist(), g.t.tolist(), g.w.tolist()):
        w.writerow([ids[s], ids[t], x])
    return buf.getvalue()
