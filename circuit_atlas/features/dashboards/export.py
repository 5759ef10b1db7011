"""Dashboards in the viewers' shapes: circuit-tracer / Neuronpedia feature JSON, and a folder of it.

feature_json(d): {transcoder_id, index, layer, feature, examples_quantiles: [{quantile_name,
examples: [{tokens, tokens_acts_list, train_token_ind, is_repeated_datapoint}]}], top_logits,
bottom_logits, act_min, act_max, quantile_values, histogram, activation_frequency} plus our fields
(label, label_source, top_inputs, ...). `index` is circuit-tracer's feature id, cantor(layer, f),
which is also the file name the viewer fetches: <out>/<scan>/<cantor(layer, f)>.json (a graph exported
with metadata.scan = "./<scan>" points its feature panel there; see circuit_tracer.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from .dashboard import FeatureDashboard


def cantor(a: int, b: int) -> int:
    """circuit-tracer's feature id of (layer, index): (a + b)(a + b + 1)/2 + b."""
    return (a + b) * (a + b + 1) // 2 + b


def feature_json(d: FeatureDashboard, scan: str | None = None) -> dict:
    groups = []
    for band in d.bands:
        examples = [{"tokens": e.tokens, "tokens_acts_list": e.acts, "train_token_ind": e.max_index,
                     "is_repeated_datapoint": e.repeated, "window": e.window, "position": e.position}
                    for e in band.examples]  # fmt: skip
        groups.append({"quantile_name": band.name, "examples": examples})
    return {
        "transcoder_id": scan or d.transcoders,
        "index": cantor(d.layer, d.index),
        "layer": d.layer,
        "feature": d.index,
        "label": d.label,
        "label_source": d.label_source,
        "examples_quantiles": groups,
        "top_logits": [t for t, _ in d.top_logits],
        "bottom_logits": [t for t, _ in d.bottom_logits],
        "top_logits_values": [v for _, v in d.top_logits],
        "bottom_logits_values": [v for _, v in d.bottom_logits],
        "logits_per_layer": {
            str(o): {"top": [t for t, _ in top], "bottom": [t for t, _ in bottom]}
            for o, (top, bottom) in d.logits_per_layer.items()
        },  # fmt: skip
        "top_inputs": [t for t, _ in d.top_inputs],
        "bottom_inputs": [t for t, _ in d.bottom_inputs],
        "act_min": min((e.value for b in d.bands for e in b.examples), default=0.0),
        "act_max": d.max,
        "quantile_values": list(d.quantiles.values()),
        "quantile_levels": list(d.quantiles.keys()),
        "histogram": [float(c) for c in d.histogram_counts],
        "histogram_edges": d.histogram_edges,
        "activation_frequency": d.frequency,
        "n_tokens": d.n_tokens,
    }


def export_folder(dashboards_dir: str | os.PathLike, out: str | os.PathLike, scan: str | None = None,
                  progress: bool = True) -> Path:  # fmt: skip
    """Write every feature as <out>/<scan>/<cantor(layer, f)>.json, the layout circuit-tracer's viewer
    reads for a local scan, and an index.json of {layer, feature, file, label}. Returns <out>/<scan>."""
    from .store import open_dashboards

    dash = open_dashboards(dashboards_dir)
    scan = scan or dash.name
    if "/" in scan or scan in ("", ".", ".."):
        raise ValueError(f"scan {scan!r} must be a plain folder name")
    folder = Path(out).expanduser() / scan
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    total = sum(dash.width(l) for l in range(dash.n_layers))
    with tqdm(total=total, unit="feature", disable=not progress, desc="export") as bar:
        for layer in range(dash.n_layers):
            for f in range(dash.width(layer)):
                d = dash.dashboard(layer, f)
                name = f"{cantor(layer, f)}.json"
                tmp = folder / f".{name}.tmp"
                tmp.write_text(json.dumps(feature_json(d, scan), ensure_ascii=False))
                os.replace(tmp, folder / name)
                index.append({"layer": layer, "feature": f, "file": name, "label": d.label})
                bar.update()
    (folder / "index.json").write_text(json.dumps({"scan": scan, "features": index}, ensure_ascii=False))
    return folder
