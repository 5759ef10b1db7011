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


def sites(model, n_cities: int, seed: int) -> dict[str, float]:
    """Where the two-hop answer lives: the fraction of sampled prompts whose answer loses top-1 when every
    active feature at a site is switched off (x0), in frozen-attention and in constrained (linear) mode.

    city: the city's tokens; after: every position after the city; last: the final position; region:
    the recipe's region features. Zeroing "city" leaving the answer while "last" changes it means the
    final position can compute the capital from the raw city tokens that attention moves there.
    """
    import torch

    from circuit_atlas.interventions import discovery as d
    from circuit_atlas.interventions import recipes as rc
    from circuit_atlas.toyworld import experiments as ex

    runner = ex.Runner(model, progress=False)
    counts: dict[str, int] = {}
    picks = sample_cities(n_cities, seed)
    for city, region, _ in picks:
        prompt, answer = ex.two_hop_prompt(city, region), " " + region.capital
        reference = ex.two_hop_prompt(ex.reference_city(region), region)
        found = rc.region_supernodes(model, prompt, city, answer, reference, graph=runner.graph(prompt),
                                     reference_features=runner.acts(reference), pruned=runner.pruned(prompt))  # fmt: skip
        acts, span = runner.acts(prompt), d.token_span(model, prompt, city)
        last = len(model.tokenize(prompt)) - 1
        groups = {
            "city": {f: v for f, v in acts.items() if f.position in span},
            "after": {f: v for f, v in acts.items() if f.position > span[-1]},
            "last": {f: v for f, v in acts.items() if f.position == last},
            "region": found.region,
        }
        for name, features in groups.items():
            for mode in ("frozen_attention", "constrained"):
                key = f"{name} x0 ({mode})"
                if features:
                    logits = model.intervene(prompt, rc.ablate(features, 0.0), mode=mode).logits[-1]
                    changed = model.tokenizer.decode([int(torch.argmax(logits))]) != answer
                else:
                    changed = False
                counts[key] = counts.get(key, 0) + changed
    return {k: v / len(picks) for k, v in counts.items()}


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
    ap.add_argument("--sites", action="store_true", help="also: where the two-hop answer lives (site ablations)")
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
    if a.sites:
        for k, v in sites(model, a.cities, a.seed).items():
            print(f"answer changes, {k:<34} {100 * v:5.0f}%")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summaries, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
