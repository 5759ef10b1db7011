"""Train one toy-world design variant end to end and measure it: model, CLT (optionally PLT), probe.

    python bench/toyworld_variant.py OUT [--corpus KEY=VALUE ...] [--model KEY=VALUE ...]
        [--transcoder KEY=VALUE ...] [--plt] [--cities 30] [--words 8]

KEY=VALUE pairs override CorpusConfig / ModelConfig fields (toyworld/corpus.py, toyworld/model.py)
and TRANSCODER_RECIPE (zoo/rebuild.py); values are read as JSON when they parse ("0.1", "true"),
as strings otherwise. Writes OUT/model, OUT/clt (and OUT/plt), OUT/variant.json (settings, model
accuracy, transcoder metrics, probe rates, seconds) and prints the probe table. The syllable world
(docs/toyworld-v3-notes.md): run with CIRCUIT_ATLAS_TOYWORLD_CITIES=syllable in the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _pairs(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--corpus", nargs="*", default=[])
    ap.add_argument("--model", nargs="*", default=[])
    ap.add_argument("--transcoder", nargs="*", default=[])
    ap.add_argument("--transcoder-corpus", nargs="*", default=[],
                    help="CorpusConfig overrides for the transcoders' training text only (the model keeps --corpus)")  # fmt: skip
    ap.add_argument("--skip-transcoders", action="store_true", help="reuse OUT/clt (and OUT/plt): probe only")
    ap.add_argument("--drop-city-template", type=int, nargs="*", default=[],
                    help="leave these CITY_TEMPLATES (by index) out of the corpus")  # fmt: skip
    ap.add_argument("--plt", action="store_true")
    ap.add_argument("--cities", type=int, default=30)
    ap.add_argument("--words", type=int, default=8)
    ap.add_argument("--skip-model", action="store_true", help="reuse OUT/model")
    a = ap.parse_args(argv)

    import torch
    import toyworld_probe

    from circuit_atlas import ReplacementModel
    from circuit_atlas.toyworld import build
    from circuit_atlas.toyworld.corpus import write_corpus
    from circuit_atlas.training import TrainConfig, train_transcoders
    from circuit_atlas.zoo.rebuild import EVAL_SENTENCES, TRAIN_SENTENCES, TRANSCODER_RECIPE

    if a.drop_city_template:
        from circuit_atlas.toyworld import corpus

        corpus.CITY_TEMPLATES = tuple(t for i, t in enumerate(corpus.CITY_TEMPLATES) if i not in a.drop_city_template)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ccfg, mcfg = build.default_configs(0)
    ccfg = dataclasses.replace(ccfg, **_pairs(a.corpus))
    mcfg = dataclasses.replace(mcfg, **_pairs(a.model))
    recipe = {**TRANSCODER_RECIPE, **_pairs(a.transcoder)}
    from circuit_atlas.toyworld import world

    record = {
        "city_scheme": world.CITY_SCHEME,  # CIRCUIT_ATLAS_TOYWORLD_CITIES
        "drop_city_template": a.drop_city_template,
        "corpus": _pairs(a.corpus),
        "model": _pairs(a.model),
        "transcoder": _pairs(a.transcoder),
        "transcoder_corpus": _pairs(a.transcoder_corpus),
    }
    t0 = time.time()
    if not a.skip_model:
        metrics = build.build_toyworld_model(out / "model", corpus_config=ccfg, model_config=mcfg)
        record["accuracy"] = metrics["accuracy"]
        record["model_seconds"] = metrics["train"]["seconds"]
        print(json.dumps(metrics["accuracy"]), flush=True)
    # The transcoders may read another mix of the same world (e.g. more city sentences); the held-out text
    # they are scored on stays the model's own mix.
    tcfg = dataclasses.replace(ccfg, **_pairs(a.transcoder_corpus))
    write_corpus(out / "corpus.txt", seed=0, n_sentences=TRAIN_SENTENCES, config=tcfg)
    write_corpus(out / "heldout.txt", seed=1, n_sentences=EVAL_SENTENCES, config=ccfg)
    kinds = ("clt", "plt") if a.plt else ("clt",)
    for kind in kinds if not a.skip_transcoders else ():
        t1 = time.time()
        result = train_transcoders(out / "model", out / "corpus.txt", out / kind, TrainConfig(kind=kind, seed=0, **recipe),
                                   eval_data=out / "heldout.txt", force=True)  # fmt: skip
        m = result.metrics
        record[kind] = {k: m[k] for k in ("fvu_mean", "l0_mean", "top1_agreement") if k in m}
        record[kind]["seconds"] = time.time() - t1
        print(kind, json.dumps(record[kind]), flush=True)
    torch.set_num_threads(2)
    for kind in kinds:
        model = ReplacementModel.from_pretrained(out / "model", out / kind, allow_model_mismatch=True)
        rates = toyworld_probe.run(model, a.cities, a.words, 0, progress=False)
        record[f"probe_{kind}"] = {k: v["rate"] for k, v in rates.items()}
        record[f"probe_{kind}_split"] = {k: {s: v[s]["rate"] for s in ("heldout", "trained")} for k, v in rates.items()
                                         if "heldout" in v}  # fmt: skip
        print(f"--- {kind}")
        print(toyworld_probe.format_rates(rates), flush=True)
        record[f"sites_{kind}"] = toyworld_probe.sites(model, 16, 0)
        for k, v in record[f"sites_{kind}"].items():
            print(f"answer changes, {k:<34} {100 * v:5.0f}%", flush=True)
    record["seconds"] = time.time() - t0
    (out / "variant.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
