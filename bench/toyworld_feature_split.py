"""Does the transcoder hold what the toy world's answer depends on? Three checks on any model + transcoders.

    python bench/toyworld_feature_split.py MODEL TRANSCODERS [--cities 40] [--any-kind] [--lang fr] [--words 8]

cities (real model, frozen attention, live MLPs): MLP0's output on the city span of the two-hop prompt is
    moved by a donor's (a city of another region with as many tokens, right-aligned), in parts: the whole
    output, the transcoder's layer-0 features (their decoder into layer 0), its skip, its error (the rest),
    and the sums. "-> donor" counts answers that become the donor's capital. When the whole output moves
    (almost) every answer and the features alone do not, the region lives partly in the error / skip,
    where no feature intervention can reach it.
language sites: every active feature at some positions of "Le contraire de petit est" switched off (x0) or
    inverted (x-1): -> the English opposite. x0 failing everywhere means the frame's tokens themselves
    (their embeddings, read by attention) carry the language, which no feature edit removes.
language x-1: the recipe's language supernode (experiments.py) at x0, x-0.5, x-1 and x-2, on the probe's
    sampled words (bench/toyworld_probe.py), per language.
"""

from __future__ import annotations

import argparse
import collections
import os
import random

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PARTS = ("full", "feat", "skip", "err", "feat+skip", "feat+err")


def _layer0_parts(tc, run, pos):
    """MLP0's output at `pos` split into the transcoder's layer-0 features, skip, error (bias apart)."""
    import torch

    x = run.feature_inputs[0, pos]
    feat = tc.activate(0, tc.encode(0, x)) @ tc.W_dec[0][:, 0]
    skip = tc.skip(0, x) if tc.has_skip else torch.zeros_like(feat)
    full = run.mlp_outputs[0, pos]
    err = full - feat - skip - tc.b_dec[0]
    return {"full": full, "feat": feat, "skip": skip, "err": err, "feat+skip": feat + skip, "feat+err": feat + err}


def city_split(model, n: int, same_kind: bool, seed: int = 5) -> dict[str, int]:
    import torch

    from circuit_atlas.interventions import discovery as d
    from circuit_atlas.models.forward import clean_forward
    from circuit_atlas.models.layers import Options, embed, run_layers
    from circuit_atlas.toyworld import experiments as ex
    from circuit_atlas.toyworld import world

    w, tc, tok = model.weights, model.transcoders, model.tokenizer
    rng = random.Random(seed)
    cities = world.all_cities()
    length = {c: len(tok(" " + c, add_special_tokens=False)["input_ids"]) for c, _ in cities}
    counts: collections.Counter = collections.Counter()
    for _ in range(n):
        while True:
            city, region = rng.choice(cities)
            pool = [(c, r) for c, r in cities if r is not region and length[c] == length[city]
                    and (r.kind == region.kind or not same_kind)]  # fmt: skip
            if pool:
                break
        donor, target = rng.choice(pool)
        p, q = ex.two_hop_prompt(city, region), ex.two_hop_prompt(donor, target)
        ip, iq = model.tokenize(p), model.tokenize(q)
        sp, sq = d.token_span(model, p, city), d.token_span(model, q, donor)
        rp, rq = (clean_forward(w, i, tc.input_hook, tc.output_hook) for i in (ip, iq))
        want = tok(" " + target.capital, add_special_tokens=False)["input_ids"][0]
        own, don = _layer0_parts(tc, rp, sp), _layer0_parts(tc, rq, sq)
        for part in PARTS:
            delta = torch.zeros_like(rp.mlp_outputs[0])
            delta[sp] = don[part] - own[part]
            opts = Options(tc.input_hook, tc.output_hook, patterns=rp.patterns,
                           edit=lambda l, x, delta=delta: delta if l == 0 else None)  # fmt: skip
            counts[part] += int(run_layers(w, embed(w, ip), opts).logits[-1].argmax()) == want
    return dict(counts)


def language_sites(model, lang: str) -> tuple[int, dict[str, int]]:
    from circuit_atlas.interventions import discovery as d
    from circuit_atlas.interventions import recipes as rc
    from circuit_atlas.toyworld import experiments as ex
    from circuit_atlas.toyworld import world

    tok, li = model.tokenizer, ex.LANGS.index(lang)
    counts: collections.Counter = collections.Counter()
    n = 0
    for pair in world.OPPOSITES:
        for j in (0, 1):
            word, english = pair[li][j], " " + pair[0][1 - j]
            ids = tok(english, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                continue
            n += 1
            p = ex.opposite_prompt(lang, word)
            T, operand = len(model.tokenize(p)), d.token_span(model, p, word)
            acts = d.active_features(model, p)
            groups = {"last": [T - 1], "frame": [i for i in range(1, T) if i not in operand],
                      "frame but last": [i for i in range(1, T - 1) if i not in operand]}  # fmt: skip
            for name, pos in groups.items():
                fs = {f: v for f, v in acts.items() if f.position in pos}
                for factor in (0.0, -1.0):
                    logits = model.intervene(p, rc.ablate(fs, factor), mode=rc.MODE).logits[-1]
                    counts[f"{name} x{factor:g}"] += int(logits.argmax()) == ids[0]
    return n, dict(counts)


def language_factors(model, n_words: int, seed: int = 0) -> dict[str, dict[str, int]]:
    """The recipe's language supernode (found as experiments.py finds it) at several factors."""
    from circuit_atlas.interventions import recipes as rc
    from circuit_atlas.toyworld import experiments as ex
    from circuit_atlas.toyworld import world

    runner, found = ex.Runner(model, progress=False), {}
    ablate = rc.ablate

    def recording(features, factor=rc.SUPPRESS, name="supernode"):
        if name == "language":
            found["last"] = features
        return ablate(features, factor, name)

    rng = random.Random(f"probe-words-{seed}")  # bench/toyworld_probe.py's sample
    words = rng.sample([(i, j) for i in range(len(world.OPPOSITES)) for j in (0, 1)], n_words)
    out: dict[str, dict[str, int]] = collections.defaultdict(collections.Counter)
    rc.ablate = recording  # experiments.py calls rc.ablate(language(), ...): record the set it finds
    try:
        for lang in ex.LANGS:
            for i, j in words:
                found.pop("last", None)
                ex._one_word(runner, lang, world.OPPOSITES[i], j)
                trial = runner.trials["multilingual.language_off_x0"][-1]
                out["n"][lang] += 1
                if "last" not in found:
                    continue  # the rule failed (counted as a failure)
                prompt = ex.opposite_prompt(lang, world.OPPOSITES[i][ex.LANGS.index(lang)][j])
                for factor in (0.0, -0.5, -1.0, -2.0):
                    logits = model.intervene(prompt, ablate(found["last"], factor, "language"), mode=rc.MODE).logits[-1]
                    out[f"x{factor:g}"][lang] += model.tokenizer.decode([int(logits.argmax())]) == trial.expected
    finally:
        rc.ablate = ablate
    return {k: dict(v) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("transcoders")
    ap.add_argument("--cities", type=int, default=40)
    ap.add_argument("--any-kind", action="store_true", help="donors of any kind of region (default: the same kind)")
    ap.add_argument("--lang", default="fr")
    ap.add_argument("--words", type=int, default=8)
    a = ap.parse_args(argv)
    import torch

    from circuit_atlas import ReplacementModel

    torch.set_num_threads(2)
    model = ReplacementModel.from_pretrained(a.model, a.transcoders, allow_model_mismatch=True)
    split = city_split(model, a.cities, not a.any_kind)
    print(f"MLP0 on the city span moved by the donor's ({'any' if a.any_kind else 'same'} kind), -> donor capital:")
    for part in PARTS:
        print(f"  {part:<10} {split.get(part, 0):>3}/{a.cities}")
    n, sites = language_sites(model, a.lang)
    print(f"{a.lang} prompts, every active feature at a site -> the English opposite:")
    for k, v in sorted(sites.items()):
        print(f"  {k:<18} {v:>3}/{n}")
    factors = language_factors(model, a.words)
    print("the recipe's language supernode x factor -> the competing language's opposite:")
    for k, v in factors.items():
        if k != "n":
            print(f"  {k:<6} " + "  ".join(f"{lang} {v.get(lang, 0)}/{factors['n'][lang]}" for lang in factors["n"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
