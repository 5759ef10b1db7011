"""The two engines' graphs compared (bench/attribution.py): nodes aligned by identity (feature (layer,
position, index), error (layer, position), embedding position, logit token id), then the relative Frobenius
norm of the difference of the adjacencies, and what differs by design under max_feature_nodes.
"""

from __future__ import annotations

from pathlib import Path


def node_keys(t: dict, n_layers: int, n_nodes: int | None = None) -> list[tuple]:
    """Identity of every node of a saved graph, in its node order."""
    T = int(t["input_ids"].shape[0])
    keys = [("feature", *map(int, row)) for row in t["features"].tolist()]
    if "errors" in t:
        keys += [("error", int(l), int(p)) for l, p in t["errors"].tolist()]
    else:  # circuit-tracer: every (layer, pos), layer-major, BOS included
        keys += [("error", l, p) for l in range(n_layers) for p in range(T)]
    keys += [("embedding", p) for p in range(T)]
    keys += [("logit", int(i)) for i in t["logit_ids"].tolist()]
    n = n_nodes if n_nodes is not None else t["adjacency"].shape[0]
    assert len(keys) == n, (len(keys), n)
    return keys


def compare(ct_path: Path, ours_path: Path, n_layers: int) -> dict:
    """Circuit-tracer's dense adjacency against our CSR edges, nodes aligned by identity.

    rel_frobenius = ||A_ours - A_ct||_F / ||A_ct||_F over every cell of either graph (a node missing on
    one side is a zero row and column there). Under max_feature_nodes circuit-tracer keeps only the
    selected features as nodes while we keep every active feature as a source-only node, so there the
    figure is taken over circuit-tracer's node set (rel_frobenius_common) and the mass of our extra
    sources is reported apart (ours_mass_outside_ct, by design, not an error)."""
    import torch
    from safetensors.torch import load_file

    ct, ours = load_file(str(ct_path)), load_file(str(ours_path))
    A = ct["adjacency"]
    n_ours = len(ours["features"]) + len(ours["errors"]) + len(ours["input_ids"]) + len(ours["logit_ids"])
    kc, ko = node_keys(ct, n_layers), node_keys(ours, n_layers, n_ours)
    pos_o = {k: i for i, k in enumerate(ko)}
    pos_c = {k: i for i, k in enumerate(kc)}
    m = torch.tensor([pos_o.get(k, -1) for k in kc], dtype=torch.long)  # ours' index of ct's node i
    have = m >= 0
    mc = m.clamp(min=0)
    only_ct = [k for k in kc if k not in pos_o]
    only_ours = [k for k in ko if k not in pos_c]

    row_nodes, indptr = ours["row_nodes"], ours["edge_indptr"]
    sources, values = ours["edge_sources"], ours["edge_values"].double()
    row_of = torch.full((n_ours,), -1, dtype=torch.long)
    row_of[row_nodes] = torch.arange(len(row_nodes))

    diff2 = normA2 = covered2 = 0.0
    max_abs = 0.0
    chunk = 256
    for i0 in range(0, A.shape[0], chunk):
        a = A[i0 : i0 + chunk].double()
        b = torch.zeros(a.shape[0], n_ours, dtype=torch.float64)  # our rows of these nodes, dense
        for j, r in enumerate(row_of[mc[i0 : i0 + chunk]].tolist()):
            if r >= 0 and have[i0 + j]:
                s, e = int(indptr[r]), int(indptr[r + 1])
                b[j, sources[s:e]] = values[s:e]
        bg = b[:, mc]
        bg[:, ~have] = 0
        d = a - bg
        diff2 += float((d * d).sum())
        covered2 += float((bg * bg).sum())
        max_abs = max(max_abs, float(d.abs().max()))
        normA2 += float((a * a).sum())
    normB2 = float((values * values).sum())
    outside2 = max(normB2 - covered2, 0.0)  # our cells whose row or column node circuit-tracer lacks
    normA = normA2**0.5

    def kinds(keys):
        out: dict[str, int] = {}
        for k in keys:
            out[k[0]] = out.get(k[0], 0) + 1
        return out

    fa = {tuple(map(int, r)): float(a) for r, a in zip(ct["features"].tolist(), ct["activations"].tolist())}
    fb = {tuple(map(int, r)): float(a) for r, a in zip(ours["features"].tolist(), ours["activations"].tolist())}
    common = fa.keys() & fb.keys()
    act_diff = max((abs(fa[k] - fb[k]) / max(abs(fa[k]), 1e-12) for k in common), default=0.0)
    # feature rows: circuit-tracer's selected features all have rows; ours are row_nodes < n_features
    n_feat_o = len(ours["features"])
    ours_rows = {ko[i] for i in row_nodes.tolist() if i < n_feat_o}
    ct_rows = {k for k in kc if k[0] == "feature"}
    return {
        "rel_frobenius": (diff2 + outside2) ** 0.5 / normA if normA else float("nan"),
        "rel_frobenius_common": diff2**0.5 / normA if normA else float("nan"),
        "ours_mass_outside_ct": (outside2 / normB2) ** 0.5 if normB2 else 0.0,
        "max_abs_diff": max_abs,
        "max_abs_ct": float(A.abs().max()),
        "norm_ct": normA,
        "norm_ours": normB2**0.5,
        "nodes_only_ct": kinds(only_ct),
        "nodes_only_ours": kinds(only_ours),
        "same_logit_targets": sorted(ct["logit_ids"].tolist()) == sorted(ours["logit_ids"].tolist()),
        "common_features": len(common),
        "feature_rows_ct": len(ct_rows),
        "feature_rows_ours": len(ours_rows),
        "feature_rows_common": len(ct_rows & ours_rows),
        "max_rel_activation_diff": act_diff,
    }
