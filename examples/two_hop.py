"""Two-hop reasoning in the toy world: "The capital of the state containing Dallas is" -> " Austin".

    python examples/two_hop.py [--out DIR] [--transcoders toyworld-clt|toyworld-plt] [--results JSON]

It prints each run's top outputs and whether they agree with what the papers saw, draws the
diagrams into --out and writes the figures into examples/results.json (see experiments.py).

The papers trace Dallas -> Texas -> say Austin (plus capital -> say a capital -> say Austin),
then check the story by intervening: each supernode inverted (x-2), and Texas swapped for
California, China or British Columbia features taken from other prompts. We redo that on the
toy world, with supernodes found by rules (circuit_atlas/interventions/recipes.py, any user can
call them on other prompts) instead of by hand:

    Dallas-specific  features of the pruned graph from the city's first token to the end that are
                     absent, or below half as active, on the Oakland prompt (a city of another state)
    say Austin       the Dallas-specific features whose decoder ranks " Austin" in its top 10
    Texas            the other Dallas-specific features
    say a capital    last-token features of the pruned graph, not Dallas-specific, whose decoder's
                     top 10 tokens are at least half capitals
    capital          features of the pruned graph on the tokens "capital of"

A replacement region (California, China, British Columbia) is found the same way on its own
prompt (contrasted with the Dallas prompt), moved onto the Dallas prompt's positions with
align_positions (matching tokens; the city spans right-aligned) and injected at +2x.
"""

from __future__ import annotations

from pathlib import Path

import torch
from experiments import Expect, Experiments, load, parse_args, show, write_results

from circuit_atlas.features.describe import promoted_tokens
from circuit_atlas.graph.graph import ERROR, FEATURE
from circuit_atlas.graph.influence import logit_weights, node_influence
from circuit_atlas.interventions import Supernode
from circuit_atlas.interventions.discovery import active_features, graph_features, link_weight, supernode, token_span
from circuit_atlas.interventions.recipes import (
    INJECT,
    SUPPRESS,
    ablate,
    region_replacement,
    region_supernodes,
    say_capital_supernode,
    swap,
    words_supernode,
)
from circuit_atlas.interventions.supernodes import InterventionGraph
from circuit_atlas.toyworld import world

PROMPT, CITY, ANSWER = "The capital of the state containing Dallas is", "Dallas", " Austin"
REFERENCE = "The capital of the state containing Oakland is"  # same frame, a city of another state
REPLACEMENTS = {  # region: (prompt, city, its capital)
    "California": ("The capital of the state containing Oakland is", "Oakland", " Sacramento"),
    "China": ("The capital of the country containing Shanghai is", "Shanghai", " Beijing"),
    "British Columbia": ("The capital of the territory containing Vancouver is", "Vancouver", " Victoria"),
}
CAPITALS = [" " + r.capital for r in world.REGIONS]


def describe(model, name: str, features: dict, n: int = 3) -> str:
    strongest = sorted(features, key=features.get, reverse=True)[:n]
    parts = [f"L{f.layer}@{f.position}#{f.index} {promoted_tokens(model, f.layer, f.index, 3)}" for f in strongest]
    return f"{name}: {len(features)} features; strongest: " + "; ".join(parts)


def find_supernodes(model) -> dict:
    """The Dallas graph and its supernodes (feature sets), by the rules in the module docstring
    (circuit_atlas/interventions/recipes.py)."""
    region = region_supernodes(model, PROMPT, CITY, ANSWER, reference=REFERENCE)
    graph, specific = region.graph, region.specific
    say_capital = say_capital_supernode(model, graph, CAPITALS, exclude=specific)
    capital = words_supernode(graph, model, PROMPT, "capital of")
    sets = {"Texas": region.region, "say a capital": say_capital, "say Austin": region.say, "capital": capital}
    return {"graph": graph, "pruned": graph_features(graph.prune()), "specific": specific, "sets": sets}


def replacement(model, region: str) -> tuple[dict, dict]:
    """A region's features (all specific ones, and the state part without say-<capital>) on the
    Dallas prompt's positions."""
    prompt, city, answer = REPLACEMENTS[region]
    found = region_replacement(model, prompt, city, answer, PROMPT)
    return found.specific, found.region


# What the papers saw when each supernode is inverted (x-2)
PAPER = {
    "Texas": Expect("say Austin falls; other capitals take over", tops=[c for c in CAPITALS if c != ANSWER]),
    "say a capital": Expect("the capital-ness goes; the model names the state (Texas)", tops=[" Texas"]),
    "say Austin": Expect("Austin falls", not_tops=[ANSWER]),
    "capital": Expect("the model names the state (Texas) instead of its capital", tops=[" Texas"]),
}


def measure(model, transcoders: str, out: str | Path | None) -> dict:
    """Every experiment of this script, printed; the figures for results.json. out=None: no diagrams."""
    # --- supernodes from the Dallas graph ------------------------------------------------------
    found = find_supernodes(model)
    graph, sets, specific = found["graph"], found["sets"], found["specific"]
    texas, say_capital, say_austin, capital = (sets[k] for k in ("Texas", "say a capital", "say Austin", "capital"))
    print(f"prompt: {PROMPT!r}   transcoders: {transcoders}   graph: {graph.count('feature')} features, "
          f"pruned to {len(found['pruned'])}; scores {', '.join(f'{k} {v:.2f}' for k, v in graph.scores().items())}")  # fmt: skip
    for name, feats in sets.items():
        print("  " + describe(model, name, feats))
    nodes = {name: supernode(name, feats) for name, feats in sets.items()}
    dallas = Supernode("Dallas")  # the city's tokens: no features, drawn as a token box
    city_emb = [f"emb:{p}" for p in token_span(model, PROMPT, CITY)]
    links = {  # direct effects in the graph between the boxes we draw
        ("Dallas", "Texas"): link_weight(graph, city_emb, texas),
        ("Texas", "say Austin"): link_weight(graph, texas, say_austin),
        ("capital", "say a capital"): link_weight(graph, capital, say_capital),
        ("say a capital", "say Austin"): link_weight(graph, say_capital, say_austin),
    }
    print("  direct effects between supernodes: " + ", ".join(f"{a} -> {b} {w:+.2f}" for (a, b), w in links.items()))
    clean = active_features(model, PROMPT)

    def make_graph() -> InterventionGraph:
        g = InterventionGraph([[dallas, nodes["capital"]], [nodes["Texas"], nodes["say a capital"]], [nodes["say Austin"]]],
                              PROMPT, edges=[e for e, w in links.items() if w > 0])  # fmt: skip
        g.initialize("all", clean)
        return g

    ex = Experiments(model, PROMPT, make_graph, out, key_tokens=[ANSWER, " Texas", " Sacramento"])

    # --- ablations: each supernode x0 and x-2 (the papers' expectation is for x-2) ------------------
    for name in sets:
        if not sets[name]:
            print(f"\n== {name}: the rule finds no features with these transcoders; nothing to ablate")
            continue
        for factor in (0.0, SUPPRESS):
            ex.run(f"{name.replace(' ', '_')}_x{factor:g}", f"{name} x{factor:g}", ablate(sets[name], factor, name),
                   {name: f"{factor:g}x"}, expect=PAPER[name] if factor == SUPPRESS else None)  # fmt: skip

    # --- replacements: Texas (with its say-Austin part) -> another region -------------------------
    swaps = {}
    for region, (prompt, _city, answer) in REPLACEMENTS.items():
        moved_all, moved_state = replacement(model, region)
        print(f"\n{region} from {prompt!r}: {len(moved_all)} specific features on the Dallas positions, "
              f"{len(moved_all) - len(moved_state)} of them say-{answer.strip()}")  # fmt: skip
        expect = Expect(f"the answer becomes {answer.strip()}", tops=[answer])
        # The whole region (state + say-capital features) for the whole Texas (+ say Austin) ...
        whole = ex.run(f"swap_{region.replace(' ', '_')}", f"Texas + say Austin x-2, {region} (+ say {answer.strip()}) "
                       "+2x", swap({**texas, **say_austin}, moved_all, SUPPRESS, INJECT),
                       {"Texas": "-2x", "say Austin": "-2x"},
                       replacement=("Texas", supernode(region, moved_all), {f: INJECT * v for f, v in moved_all.items()}),
                       expect=expect)  # fmt: skip
        # ... and the paper's narrower swap: state features only, say-Austin left to follow.
        state_only = ex.run(f"swap_{region.replace(' ', '_')}_state_only", f"Texas x-2, {region} state features +2x "
                            "(say features untouched)", swap(texas, moved_state, SUPPRESS, INJECT), {"Texas": "-2x"},
                            replacement=("Texas", supernode(region, moved_state),
                                         {f: INJECT * v for f, v in moved_state.items()}), expect=expect)  # fmt: skip
        swaps[region] = (answer, whole, state_only)

    # --- where the toy world differs from the paper ----------------------------------------------
    print("\n== toy world vs paper")
    for name, expect in PAPER.items():
        got = ex.results.get(f"{name.replace(' ', '_')}_x-2")
        if got is None:
            print(f"  {name} x-2: no such features with these transcoders (paper: {expect.text})")
            continue
        print(f"  {name} x-2: top {show(got['top'][:1])} (paper: {expect.text}; "
              f"{'same' if got['agrees'] else 'differs'})")  # fmt: skip
    for region, (answer, whole, state_only) in swaps.items():
        top_whole, top_state = whole["top"][0][0], state_only["top"][0][0]
        print(f"  Texas -> {region}: whole-region swap gives {top_whole!r}, state-only swap {top_state!r} "
              f"(paper: {answer!r}; {'same' if top_whole == answer else 'differs'} / "
              f"{'same' if top_state == answer else 'differs'})")  # fmt: skip
    n_whole = sum(w["top"][0][0] == a for a, w, _ in swaps.values())
    n_state = sum(s["top"][0][0] == a for a, _, s in swaps.values())
    say_layers = sorted({f.layer for f in say_austin})
    print(f"  {len(say_austin)} of the {len(specific)} Dallas-specific features promote ' Austin' themselves "
          f"(layers {say_layers}, last token).")  # fmt: skip
    if n_whole > n_state:
        print("  Swapping the state features alone does not move say-Austin to the new capital: in the toy world "
              "the say-capital features do not follow injected state features, so they are swapped with them.")  # fmt: skip
    influence = node_influence(graph.csr, graph.row_nodes, graph.n_nodes, logit_weights(graph))
    at_city = torch.isin(graph.position, torch.tensor(token_span(model, PROMPT, CITY)))
    err, feat = (float(influence[at_city & (graph.kind == k)].sum()) for k in (ERROR, FEATURE))
    print(f"  At the city tokens, transcoder error nodes carry {err:.2f} of the influence on the logits and features "
          f"{feat:.2f}: the part of the city -> state lookup in the errors is out of reach of feature interventions.")  # fmt: skip
    return ex.summary(
        supernode_sizes={name: len(feats) for name, feats in sets.items()},
        dallas_specific=len(specific),
        say_austin_layers=say_layers,
        graph_features=graph.count("feature"),
        pruned_features=len(found["pruned"]),
        city_influence={"errors": round(err, 4), "features": round(feat, 4)},
    )


def main() -> None:
    args = parse_args(__doc__, "two_hop")
    results = measure(load(args.transcoders), args.transcoders, args.out)
    print(
        f"\nfigures: {Path(args.out).resolve()}\nmeasured figures: {write_results('two_hop', args.transcoders, results, args.results)}"
    )


if __name__ == "__main__":
    main()
