"""`circuit-atlas zoo rebuild toyworld`: regenerate the shipped toy world from scratch.

Corpus -> tokenizer -> model (toyworld/build.py), then a PLT and a CLT trained on the same
corpus (training/), then their feature dashboards (features/dashboards/toyworld.py), all written into a staging directory and swapped into place at the end,
so a failed rebuild never leaves a half-written zoo. The figures are compared with the
shipped ones (zoo.json) within TOLERANCE and printed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from . import ZOO_DIR

# The recipe found by measurement (see the README): BatchTopK k=16, width 1024, skip, 600 steps.
TRANSCODER_RECIPE = dict(activation="batchtopk", k=16, width=1024, skip=True, steps=600, batch_tokens=4096,
                         seq_len=32, pack_documents=False)  # fmt: skip
# How far a rebuild on another machine may land from the shipped figures.
TOLERANCE = {"accuracy": 0.03, "fvu": 0.02, "mean_l0": 2.0, "top1_agreement": 0.02}
TRAIN_SENTENCES = 200_000
EVAL_SENTENCES = 4_000


def _flat(manifest: dict) -> dict[str, float]:
    out = {f"model {k}": v for k, v in manifest["model"]["accuracy"].items()}
    for kind in ("plt", "clt"):
        m = manifest[kind]
        out[f"{kind} mean fvu"] = m["fvu_mean"]
        out[f"{kind} mean l0"] = m["l0_mean"]
        out[f"{kind} top1 agreement"] = m["top1_agreement"]
    return out


def _tolerance(key: str) -> float:
    if key.startswith("model"):
        return TOLERANCE["accuracy"]
    if "fvu" in key:
        return TOLERANCE["fvu"]
    return TOLERANCE["mean_l0"] if "l0" in key else TOLERANCE["top1_agreement"]


def compare(new: dict, shipped: dict) -> list[str]:
    """Lines 'name new shipped ok|OFF' for every figure both manifests have."""
    a, b = _flat(new), _flat(shipped)
    lines = []
    for key in a:
        if key in b:
            ok = abs(a[key] - b[key]) <= _tolerance(key)
            lines.append(f"  {key:32s} {a[key]:8.4f}  shipped {b[key]:8.4f}  {'ok' if ok else 'OFF'}")
    return lines


def rebuild_toyworld(out: Path | None = None, *, seed: int = 0, progress: bool = True) -> dict:
    from ..toyworld.build import build_toyworld_model
    from ..toyworld.corpus import write_corpus
    from ..training import TrainConfig, train_transcoders

    out = Path(out) if out is not None else ZOO_DIR / "toyworld"
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".toyworld.rebuild-", dir=out.parent))
    t0 = time.time()
    try:
        print("[1/4] corpus, tokenizer and model")
        model_metrics = build_toyworld_model(staging / "model", seed=seed, progress=progress)
        data = staging / "corpus.txt"
        write_corpus(data, seed=seed, n_sentences=TRAIN_SENTENCES)
        eval_data = staging / "heldout.txt"
        write_corpus(eval_data, seed=seed + 1, n_sentences=EVAL_SENTENCES)
        manifest = {"format": "circuit-atlas-zoo", "version": 1, "seed": seed, "model": model_metrics}
        for step, kind in ((2, "plt"), (3, "clt")):
            print(f"[{step}/4] {kind.upper()} transcoders")
            config = TrainConfig(kind=kind, seed=seed, **TRANSCODER_RECIPE)
            result = train_transcoders(staging / "model", data, staging / kind, config, eval_data=eval_data,
                                       progress=progress)  # fmt: skip
            manifest[kind] = result.metrics
            # Record the zoo name, not the staging directory the model was trained from.
            header = staging / kind / "circuit_atlas_transcoders.json"
            meta = json.loads(header.read_text())
            meta["metadata"]["model"] = "toyworld"
            header.write_text(json.dumps(meta, indent=2))
        for scratch in (data, eval_data):
            scratch.unlink()
        print("[4/4] feature dashboards")
        from ..features.dashboards.toyworld import build_toyworld_dashboards

        build_toyworld_dashboards(staging, seed=seed, progress=progress)
        manifest["rebuild_seconds"] = time.time() - t0
        (staging / "zoo.json").write_text(json.dumps(manifest, indent=2))
        shipped = out / "zoo.json"
        if shipped.is_file():
            print("compared with the previous build (tolerance: " + json.dumps(TOLERANCE) + "):")
            print("\n".join(compare(manifest, json.loads(shipped.read_text()))))
        from ..transcoders.io import swap_into_place

        swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"toy world rebuilt in {manifest['rebuild_seconds'] / 60:.1f} min -> {out}")
    return manifest
