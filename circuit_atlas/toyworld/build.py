"""Build the toy-world model end to end: corpus -> tokenizer -> model -> evaluation.

    python -m circuit_atlas.toyworld.build OUT_DIR [--seed 0] [--steps N] [--no-progress]

writes into OUT_DIR: the Hugging Face model (config.json, model.safetensors), the tokenizer
(tokenizer.json, tokenizer_config.json), metrics.json (accuracies, training time and settings,
tokenization statistics) and corpus_config.json (everything needed to regenerate the corpus,
including the held-out cities).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import corpus as C
from . import evaluate as E
from . import model as M
from . import tokenizer as T
from . import world as W

TOKENIZER_VOCAB = 4096


def default_configs(seed: int = 0) -> tuple[C.CorpusConfig, M.ModelConfig]:
    """The shipped design (see the package docstring for why)."""
    return C.CorpusConfig(seed=seed), M.ModelConfig(seed=seed)


def tokenization_stats(tokenizer) -> dict:
    cities = [c for c, _ in W.all_cities()]
    n = [T.n_tokens(tokenizer, c) for c in cities]
    return {
        "vocab_size": len(tokenizer),
        "cities_multi_token_fraction": sum(k > 1 for k in n) / len(n),
        "city_tokens_mean": sum(n) / len(n),
        "capitals_single_token_fraction": sum(T.n_tokens(tokenizer, r.capital) == 1 for r in W.REGIONS)
        / len(W.REGIONS),
        "regions_single_token_fraction": sum(T.n_tokens(tokenizer, r.name) == 1 for r in W.REGIONS) / len(W.REGIONS),
        "showcase": {
            c: tokenizer.convert_ids_to_tokens(tokenizer.encode(" " + c, add_special_tokens=False)) for c in W.SHOWCASE
        },
    }


def build_toyworld_model(
    out_dir,
    *,
    seed: int = 0,
    progress: bool = True,
    corpus_config: C.CorpusConfig | None = None,
    model_config: M.ModelConfig | None = None,
) -> dict:
    """Generate the corpus, train tokenizer and model, save them to `out_dir`, evaluate.

    Returns the metrics dict (also written to `out_dir/metrics.json`).
    """
    t0 = time.time()
    ccfg, mcfg = default_configs(seed)
    ccfg = dataclasses.replace(corpus_config, seed=seed) if corpus_config is not None else ccfg
    mcfg = dataclasses.replace(model_config, seed=seed) if model_config is not None else mcfg
    os.makedirs(out_dir, exist_ok=True)

    docs = C.generate_corpus(ccfg.seed, ccfg.n_sentences, ccfg)
    first = C.first_phase_corpus(ccfg.seed, ccfg.n_sentences // 2, ccfg) if mcfg.curriculum_steps else None
    tok = T.train_tokenizer(C.tokenizer_text(docs), vocab_size=TOKENIZER_VOCAB)
    model, info = M.train_model(docs, tok, mcfg, progress=progress, first_docs=first)
    M.save_model(model, tok, out_dir)

    acc = E.evaluate(model, tok, C.eval_sets(ccfg.seed))
    metrics = {
        "accuracy": acc,
        "train": {**info, "model_config": mcfg.to_json(), "total_seconds": time.time() - t0},
        "tokenization": tokenization_stats(tok),
    }
    E.write_metrics(out_dir, metrics)
    with open(os.path.join(str(out_dir), "corpus_config.json"), "w", encoding="utf-8") as f:
        f.write(C.corpus_config_json(ccfg))
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m circuit_atlas.toyworld.build", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    mcfg = None
    if a.steps is not None:
        mcfg = dataclasses.replace(default_configs(a.seed)[1], steps=a.steps)
    m = build_toyworld_model(a.out_dir, seed=a.seed, progress=not a.no_progress, model_config=mcfg)
    json.dump(m["accuracy"], sys.stdout, indent=2)
    print(f"\ntrained in {m['train']['seconds']:.0f} s; wrote {a.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
