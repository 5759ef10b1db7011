"""A fast look at the toy world's generalisation rates: the experiments of `circuit-atlas experiments
toyworld` (same rules, multipliers and frozen attention) on a sampled subset, for any model + transcoders.

    python bench/toyworld_probe.py [MODEL TRANSCODERS] [--cities 30] [--words 10] [--seed 0]

MODEL / TRANSCODERS: a model directory and a transcoder directory (default: the shipped toyworld and
toyworld-clt). --cities N: N sampled cities (half held out, half trained), each with one sampled target
region of the same kind for the swaps (another kind as target when the kind has one region). --words N:
N sampled (concept, side) words, each in English, French and Chinese. Prints one line per experiment
(rate, held-out / trained split) and, with --json, writes the summaries. A couple of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def sample_cities(n: int, seed: int) -> list[tuple[str, object, object]]:
    """(city, region, target region): n/2 held-out and n/2 trained cities, each with a random target."""
    from circuit_atlas.toyworld import world
    from circuit_atlas.toyworld.corpus import heldout_cities

    rng = random.Random(f"probe-{seed}")
    held = set(heldout_cities())
    cities = world.all_cities()
    pick = rng.sample([c for c in cities if c[0] in held], n // 2)
    pick += rng.sample([c for c in cities if c[0] not in held], n - n // 2)
    out = []
    for city, region in pick:
        out.append((city, region, rng.choice([r for r in world.REGIONS if r is not region])))
    return out


def run(model, n_cities: int, n_words: int, seed: int, progress: bool = True) -> dict:
    from circuit_atlas.toyworld import experiments as ex
    from circuit_atlas.toyworld import world
    from circuit_atlas.toyworld.corpus import heldout_cities

    runner = ex.Runner(model, progress=False)
    held = set(heldout_cities())
    from tqdm import tqdm

    for city, region, target in tqdm(sample_cities(n_cities, seed), desc="two-hop", disable=not progress):
        ex._two_hop_city(runner, city, region, [target], city in held)
    rng = random.Random(f"probe-words-{seed}")
    words = rng.sample([(i, j) for i in range(len(world.OPPOSITES)) for j in (0, 1)], n_words)
    for lang in ex.LANGS:
        for i, j in tqdm(words, desc=f"multilingual {lang}", disable=not progress):
            ex._one_word(runner, lang, world.OPPOSITES[i], j)
    return {name: ex.summarize(runner.trials[name]) for name in sorted(runner.trials)}


def format_rates(summaries: dict) -> str:
    lines = []
    for name, s in summaries.items():
        extra = ""
        if "heldout" in s:
            extra = f"  held-out {s['heldout']['successes']}/{s['heldout']['n']}  trained {s['trained']['successes']}/{s['trained']['n']}"
        if "by_language" in s:
            extra = "  " + " ".join(f"{k} {v['successes']}/{v['n']}" for k, v in s["by_language"].items())
        lines.append(f"{name:<34} {s['successes']:>3}/{s['n']:<3} {100 * (s['rate'] or 0):5.0f}%{extra}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="toyworld")
    ap.add_argument("transcoders", nargs="?", default="toyworld-clt")
    ap.add_argument("--cities", type=int, default=30)
    ap.add_argument("--words", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the summaries here")
    a = ap.parse_args(argv)
    import torch

    from circuit_atlas import ReplacementModel

    torch.set_num_threads(a.threads)
    model = ReplacementModel.from_pretrained(a.model, a.transcoders, allow_model_mismatch=True)
    t0 = time.time()
    summaries = run(model, a.cities, a.words, a.seed)
    print(f"{a.model} + {a.transcoders}: {a.cities} cities, {a.words} words x 3 languages, {time.time() - t0:.0f} s")
    print(format_rates(summaries))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summaries, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
