"""Multilingual antonyms in the toy world: "Le contraire de petit est" -> " grand".

    python examples/multilingual.py [--out DIR] [--transcoders toyworld-clt|toyworld-plt] [--results JSON]

It prints each run's top outputs and whether they agree with what the papers saw, draws the
diagrams into --out and writes the figures into examples/results.json (see experiments.py).

The papers find the same "small", "opposite" and "say large" features on "The opposite of small
is" / "Le contraire de petit est" / "小的反义词是", with a few language features deciding the
output language, and check it by intervening: French off (English output), French off + Chinese
on (Chinese output), small -> big (the answer becomes "petit"), opposite -> synonym. We redo it
on the toy world with supernodes found by rules (circuit_atlas/interventions/recipes.py), all on
the French prompt's pruned graph; the other prompts are aligned onto its positions by role
(operand on operand, last token on last token; same-length prompts align token by token):

    French     features that favour " grand" over " big" (a positive edge to that logit difference),
               stay on with an English word in the French sentence ("Le contraire de small est",
               answered " grand": the answer follows the sentence's language) and are off with
               "petit" in an English sentence ("The opposite of petit is")
    Chinese    the Chinese prompt's own pruned-graph features absent on the French and English ones
    English    the same for the English prompt
    petit      absent on "Le contraire de grand est"   (its replacement: grand's own, vs petit)
    opposite   absent on "Un synonyme de petit est"    (its replacement: synonym's own, vs opposite)
    shared     active at the last token in all three languages (the multilingual part)

Each swap runs twice: with the papers' rule (supernode x-2, replacement +2x its activation) and
with plain patching (supernode x0, replacement at 1x its own activation).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from experiments import Expect, Experiments, load, parse_args, show, write_results

from circuit_atlas import attribute
from circuit_atlas.interventions import Supernode
from circuit_atlas.interventions.discovery import (
    active_features,
    graph_features,
    link_weight,
    select,
    shared,
    supernode,
)
from circuit_atlas.interventions.recipes import (
    INJECT,
    PATCH,
    SUPPRESS,
    ablate,
    concept_replacement,
    concept_supernode,
    language_supernode,
    onto,
    swap,
)
from circuit_atlas.interventions.supernodes import InterventionGraph

FR, EN, ZH = "Le contraire de petit est", "The opposite of small is", "小的反义词是"
GRAND, SYNONYM = "Le contraire de grand est", "Un synonyme de petit est"
# Code-switched prompts: the answer follows the sentence's language, not the word's.
FR_SMALL, ZH_SMALL, EN_PETIT, EN_XIAO = (
    "Le contraire de small est",
    "small的反义词是",
    "The opposite of petit is",
    "The opposite of 小 is",
)
LANGUAGES = {  # prompt: (its answer, the English / French answer it competes with, same frame + other word, other frame + same word)
    FR: (" grand", " big", FR_SMALL, EN_PETIT),
    ZH: ("大", " big", ZH_SMALL, EN_XIAO),
    EN: (" big", " grand", EN_PETIT, FR_SMALL),
}
ANCHORS = {ZH: [(1, 4), (-1, -1)], ZH_SMALL: [(1, 4), (-1, -1)]}  # the operand (position 1), like petit (position 4)
ENGLISH = {" big", " large", " huge", " tall"}  # English answers the paper's French-off should give
RULES = {"-2x": (SUPPRESS, INJECT), "0x": PATCH}  # (factor on the supernode, factor on the replacement)


def find_supernodes(model) -> dict:
    """The French graph, its supernodes and their replacements (feature sets on the French positions),
    by the rules of circuit_atlas/interventions/recipes.py."""
    last = len(model.tokenize(FR)) - 1
    prompts = (FR, EN, ZH, GRAND, SYNONYM, FR_SMALL, ZH_SMALL, EN_PETIT, EN_XIAO)
    acts = {p: onto(model, p, active_features(model, p), FR, ANCHORS.get(p, ())) for p in prompts}

    def language(prompt: str) -> dict:
        answer, other, same_frame, same_word = LANGUAGES[prompt]
        return language_supernode(model, prompt, answer, other, same_frame, same_word, FR, ANCHORS, acts)

    def replacement(prompt: str, *contrasts: str) -> dict:
        return concept_replacement(model, prompt, contrasts, FR, ANCHORS, acts)

    graph = attribute(model, FR, progress=False)
    fr = graph_features(graph.prune())
    sets = {
        "French": language(FR),
        "petit": concept_supernode(fr, acts[GRAND], "petit"),
        "opposite": concept_supernode(fr, acts[SYNONYM], "opposite"),
        "shared": shared(select(acts[FR], positions=[last]), acts[EN], acts[ZH]),
    }
    replacements = {
        "Chinese": replacement(ZH, FR, EN),
        "English": replacement(EN, FR, ZH),
        "grand": replacement(GRAND, FR),
        "synonym": replacement(SYNONYM, FR),
    }
    return {"graph": graph, "pruned": fr, "sets": sets, "replacements": replacements}


def measure(model, transcoders: str, out: str | Path | None) -> dict:
    """Every experiment of this script, printed; the figures for results.json. out=None: no diagrams."""
    found = find_supernodes(model)
    graph, fr, sets, replacements = found["graph"], found["pruned"], found["sets"], found["replacements"]
    last = len(graph.tokens) - 1
    print(f"prompt: {FR!r}   transcoders: {transcoders}   pruned graph: {len(fr)} features, "
          f"{len(select(fr, positions=[last]))} of them at the last token")  # fmt: skip
    for name, feats in {**sets, **replacements}.items():
        layers = sorted({f.layer for f in feats})
        print(f"  {name}: {len(feats)} features (layers {layers}, positions {sorted({f.position for f in feats})})")
    overlap = set(sets["French"]) & set(sets["petit"])
    print(f"  French and petit share {len(overlap)} of {len(sets['French'])} features: the output language is "
          "carried apart from the operand, as in the papers")  # fmt: skip

    nodes = {name: supernode(name, feats) for name, feats in sets.items()}
    tokens = {'"petit"': ["emb:4"], '"contraire"': ["emb:2"]}
    links = {
        (a, b): link_weight(graph, tokens[a], nodes[b]) for a, b in [('"petit"', "petit"), ('"contraire"', "opposite")]
    }
    to_logit = {name: link_weight(graph, node, ["logit:0"]) for name, node in nodes.items()}
    print("  direct effects: " + ", ".join(f"{a} -> {b} {w:+.2f}" for (a, b), w in links.items()) + "; on the "
          f"{graph.logit_labels[0]!r} logit: " + ", ".join(f"{n} {w:+.2f}" for n, w in to_logit.items()))  # fmt: skip
    clean = active_features(model, FR)

    def make_graph() -> InterventionGraph:
        rows = [[Supernode(t) for t in tokens],
                [nodes["petit"], nodes["opposite"], nodes["French"], nodes["shared"]]]  # fmt: skip
        g = InterventionGraph(rows, FR, edges=[e for e, w in links.items() if w > 0])
        g.initialize("all", clean)
        return g

    ex = Experiments(model, FR, make_graph, out, key_tokens=[" grand", " big", "大", " petit", " menu"])

    # --- French off ---------------------------------------------------------------------------
    english = Expect("the answer comes out in English ('big')", tops=ENGLISH)
    for factor in (0.0, SUPPRESS):
        ex.run(f"french_x{factor:g}", f"French x{factor:g}", ablate(sets["French"], factor, "French"),
               {"French": f"{factor:g}x"}, expect=english)  # fmt: skip

    # --- swaps: French -> Chinese / English, petit -> grand, opposite -> synonym ----------------
    swaps = [("French", "Chinese", "大"), ("French", "English", " big"), ("petit", "grand", " petit"),
             ("opposite", "synonym", " menu")]  # fmt: skip
    outcome = {}
    for original, new, expected in swaps:
        rep = replacements[new]
        for rule, (down, up) in RULES.items():
            measured = ex.run(f"{original}_to_{new}_{rule}", f"{original} x{down:g}, {new} +{up:g}x",
                              swap(sets[original], rep, down, up), {original: f"{down:g}x"},
                              replacement=(original, supernode(new, rep), {f: up * v for f, v in rep.items()}),
                              expect=Expect(f"the answer becomes {expected.strip()!r}", tops=[expected]))  # fmt: skip
            outcome[(original, new, rule)] = (expected, measured["top"][0][0])

    # --- where the toy world differs from the paper ----------------------------------------------
    print("\n== toy world vs paper")
    for factor in ("0", "-2"):
        got = ex.results[f"french_x{factor}"]
        verdict = "same" if got["agrees"] else "differs: not an English answer"
        print(f"  French x{factor}: top {show(got['top'][:1])}, ' big' {got['key'][' big']:.1%} "
              f"(paper: English output; {verdict})")  # fmt: skip
    for (original, new, rule), (expected, got) in outcome.items():
        print(
            f"  {original} -> {new}, {rule} rule: {got!r} (paper: {expected!r}; {'same' if got == expected else 'differs'})"
        )
    print(f"  Shared last-token features across the three languages: {len(sets['shared'])}. As in the papers, "
          "language features decide the output language apart from the operand; unlike them, switching French "
          "off (x0) is not enough here: the frame's French tokens still carry the language through attention, so "
          "only inverting it (x-2) lets the English answer through.")  # fmt: skip
    return ex.summary(
        supernode_sizes={name: len(feats) for name, feats in {**sets, **replacements}.items()},
        french_and_petit=len(overlap),
        pruned_features=len(fr),
    )


def main() -> None:
    args = parse_args(__doc__, "multilingual")
    warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # no CJK font: 大 shows as a box
    results = measure(load(args.transcoders), args.transcoders, args.out)
    path = write_results("multilingual", args.transcoders, results, args.results)
    print(f"\nfigures: {Path(args.out).resolve()}\nmeasured figures: {path}")


if __name__ == "__main__":
    main()
