"""Why does the region-only swap fail? The probe's two-hop pairs, one line each, under variants of the swap.

    python bench/toyworld_swap_diag.py MODEL TRANSCODERS [--cities 30] [--seed 0] [--alignment-only]

alignment (tokenizer only, every (city, target region) pair of `experiments toyworld`; donor = the
    target's first city): how often the donor's city lands right-aligned on the city, with the old
    alignment rule (identical tokens matched) and with the city spans given (recipes.filler_spans).
swaps (bench/toyworld_probe.py's sample, same recipes, frozen attention), each pair printed, then counts:
    region_only / whole / x0        the experiments' trials, with the spans ("new") and without ("old")
    cityspan_swap / cityspan_patch  every active feature on the city span x-2 / +2x, or x0 / 1x, the
                                    donor's (moved) as the replacement: is the rule the limit or the features?
    lasttok_swap                    the same, on the city's last token only
    region_only_x4                  the recipe's sets at x-4 / +4x
"<name>_stays" counts answers left at the original capital.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def alignment(model) -> dict[str, int]:
    from circuit_atlas.interventions import discovery as d
    from circuit_atlas.interventions import recipes as rc
    from circuit_atlas.toyworld import experiments as ex
    from circuit_atlas.toyworld import world

    c: collections.Counter = collections.Counter()
    for city, region in world.all_cities():
        p = ex.two_hop_prompt(city, region)
        t, ts = model.tokenize(p).tolist(), d.token_span(model, p, city)
        for target in world.REGIONS:
            if target is region:
                continue
            donor = target.cities[0]
            q = ex.two_hop_prompt(donor, target)
            s, ss = model.tokenize(q).tolist(), d.token_span(model, q, donor)
            c["pairs"] += 1
            for rule, spans in (("old", []), ("new", rc.filler_spans(model, q, donor, p))):
                m = d.align_positions(s, t, spans=spans)
                c[f"{rule}: last on last"] += m.get(ss[-1]) == ts[-1]
                c[f"{rule}: right-aligned"] += all(
                    m.get(x) == ts[max(len(ts) - len(ss) + i, 0)] for i, x in enumerate(ss)
                )
    return dict(c)


def swaps(model, n: int, seed: int) -> tuple[list[dict], dict[str, int]]:
    import toyworld_probe

    from circuit_atlas.interventions import discovery as d
    from circuit_atlas.interventions import recipes as rc
    from circuit_atlas.toyworld import experiments as ex

    runner, tok, filler = ex.Runner(model, progress=False), model.tokenizer, rc.filler_spans

    def top(prompt, ivs):
        return tok.decode([int(model.intervene(prompt, ivs, mode=rc.MODE).logits[-1].argmax())])

    rows, counts = [], collections.Counter()
    for city, region, target in toyworld_probe.sample_cities(n, seed):
        prompt, answer = ex.two_hop_prompt(city, region), " " + region.capital
        reference = ex.two_hop_prompt(ex.reference_city(region), region)
        donor = target.cities[0]
        dprompt, capital = ex.two_hop_prompt(donor, target), " " + target.capital
        row = {"city": city, "donor": donor, "answer": answer, "capital": capital}
        for rule in ("new", "old"):
            rc.filler_spans = filler if rule == "new" else (lambda *a: [])  # old: identical tokens matched
            try:
                own = rc.region_supernodes(model, prompt, city, answer, reference, graph=runner.graph(prompt),
                                           reference_features=runner.acts(reference), pruned=runner.pruned(prompt))  # fmt: skip
                rep = rc.region_replacement(model, dprompt, donor, capital, prompt, graph=runner.graph(dprompt),
                                            onto_features=runner.acts(prompt), pruned=runner.pruned(dprompt))  # fmt: skip
            except rc.EmptyRuleError:
                row.update({f"{k}_{rule}": "ERR" for k in ("region_only", "whole", "x0")})
                continue
            finally:
                rc.filler_spans = filler
            row[f"region_only_{rule}"] = top(prompt, rc.swap(own.region, rep.region))
            row[f"whole_{rule}"] = top(prompt, rc.swap({**own.region, **own.say}, rep.specific))
            row[f"x0_{rule}"] = top(prompt, rc.ablate(own.region, 0.0))
            if rule == "new":
                row["region_only_x4"] = top(prompt, rc.swap(own.region, rep.region, -4.0, 4.0))
        span, dspan = d.token_span(model, prompt, city), d.token_span(model, dprompt, donor)
        mine = {f: v for f, v in runner.acts(prompt).items() if f.position in span}
        theirs = {f: v for f, v in runner.acts(dprompt).items() if f.position in dspan}
        theirs = rc.onto(model, dprompt, theirs, prompt, spans=filler(model, dprompt, donor, prompt))
        row["cityspan_swap"] = top(prompt, rc.swap(mine, theirs))
        row["cityspan_patch"] = top(prompt, rc.patch(mine, theirs))
        last = [{f: v for f, v in s.items() if f.position == span[-1]} for s in (mine, theirs)]
        row["lasttok_swap"] = top(prompt, rc.swap(*last)) if all(last) else "ERR"
        for k, v in row.items():
            if k.startswith(("region_only", "whole", "cityspan", "lasttok")):
                counts[k] += v == capital
                counts[k + "_stays"] += v == answer
            elif k.startswith("x0"):
                counts[k] += v != answer
        rows.append(row)
    return rows, dict(counts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("transcoders")
    ap.add_argument("--cities", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alignment-only", action="store_true")
    a = ap.parse_args(argv)
    import torch

    from circuit_atlas import ReplacementModel

    torch.set_num_threads(2)
    model = ReplacementModel.from_pretrained(a.model, a.transcoders, allow_model_mismatch=True)
    print(json.dumps(alignment(model)))
    if a.alignment_only:
        return 0
    rows, counts = swaps(model, a.cities, a.seed)
    for row in rows:
        print(json.dumps(row))
    for k, v in sorted(counts.items()):
        print(f"{k:<24} {v:>3}/{len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
