"""Do the toy world's circuits hold up beyond one example? The examples' experiments, over every pair.

    circuit-atlas experiments toyworld [--transcoders toyworld-clt|toyworld-plt] [--out DIR]

The procedures are examples/two_hop.py's and examples/multilingual.py's, with their rules and the
papers' multipliers (circuit_atlas/interventions/recipes.py); nothing is tuned per prompt.

two-hop, every city (held-out ones marked) and, for swaps, every other region as target:
    prompt       "The capital of the {kind} containing {city} is"    answer: its region's capital
    reference    the first city of the next region of the same kind (Dallas: Oakland)
    donor        a target region's first city (California: Oakland); its features are found on its own
                 prompt contrasted with the city's, and moved onto the city's positions
    region_x0 / region_x-2          region features x0 / x-2 -> the answer changes
    swap_whole                      region + say-capital x-2, the target's whole set +2x -> target capital top-1
    swap_region_only                region features x-2, the target's region features +2x -> target capital top-1

multilingual, every word of every opposite pair in every language (English, French, Chinese):
    language_off_x0 / _x-1 / _x-2   the prompt's language supernode x0 / x-1 (the issue's "off") / x-2 ->
                                    the competing language's opposite top-1 (French and Chinese: English;
                                    English: French)
    to_<lang>_paper / _patch        the language swapped for another (x-2/+2x, or x0/1x) -> that language's opposite
    operand_paper / _patch          the word swapped for its opposite -> the word itself

A trial succeeds when the expected token is the top-1 output. A rule that finds nothing (EmptyRuleError:
e.g. a word that is the same in two languages, so a code-switched contrast prompt is the prompt itself)
counts as a failure and is counted apart; a trial whose expected answer is not one token is left out.
Rates come with a 95 % Wilson interval; `collapsed` counts outputs whose top-1 probability is within
COLLAPSE_FACTOR x uniform (InterventionResult.collapsed).

Output (--out): experiments-<transcoders>.json (format circuit-atlas-toyworld-experiments, version 1:
per experiment the summary and every trial) and experiments-<transcoders>.{png,svg} (rates with intervals).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FORMAT, VERSION = "circuit-atlas-toyworld-experiments", 1
Z95 = 1.959963984540054  # two-sided 95 % normal quantile
LANGS = ("en", "fr", "zh")
COMPETITOR = {"fr": "en", "zh": "en", "en": "fr"}  # the language whose answer a language supernode is contrasted with


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion: (low, high); (0, 1) for n = 0.

    centre = (p + z²/2n) / (1 + z²/n),  half width = z sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n),  p = successes/n
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes}")
    if n == 0:
        return 0.0, 1.0
    p, z2 = successes / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # exact at the ends (rounding would leave a 1e-17 gap): no successes -> 0, all -> 1
    return (0.0 if successes == 0 else max(0.0, centre - half)), (1.0 if successes == n else min(1.0, centre + half))


@dataclass
class Trial:
    """One intervention on one prompt (or pair), scored against its expected top-1 token."""

    item: str  # "Dallas -> California", "fr:petit"
    expected: str
    ok: bool
    top: str | None = None  # None when the rule failed
    top_p: float | None = None
    p_expected: float | None = None
    collapsed: bool = False
    heldout: bool | None = None  # two-hop: whether the city is held out of two-hop training
    error: str | None = None  # why the rule found nothing (EmptyRuleError)


def summarize(trials: Sequence[Trial]) -> dict:
    """Success rate, its Wilson interval, median expected-token probability, collapses, rule failures."""
    n, k = len(trials), sum(t.ok for t in trials)
    lo, hi = wilson(k, n)
    probs = [t.p_expected for t in trials if t.p_expected is not None]
    out = {
        "n": n,
        "successes": k,
        "rate": k / n if n else None,
        "wilson95": [lo, hi],
        "median_p_expected": statistics.median(probs) if probs else None,
        "collapsed": sum(t.collapsed for t in trials),
        "rule_failed": sum(t.error is not None for t in trials),
    }
    if trials and all(":" in t.item for t in trials):  # multilingual: "fr:petit"
        out["by_language"] = {}
        for lang in sorted({t.item.split(":")[0] for t in trials}):
            part = [t for t in trials if t.item.startswith(lang + ":")]
            kk = sum(t.ok for t in part)
            out["by_language"][lang] = {"n": len(part), "successes": kk, "rate": kk / len(part),
                                        "wilson95": list(wilson(kk, len(part)))}  # fmt: skip
    if any(t.heldout is not None for t in trials):
        for name, flag in (("heldout", True), ("trained", False)):
            part = [t for t in trials if t.heldout is flag]
            kk = sum(t.ok for t in part)
            out[name] = {"n": len(part), "successes": kk, "rate": kk / len(part) if part else None,
                         "wilson95": list(wilson(kk, len(part)))}  # fmt: skip
    return out


# --- running one trial --------------------------------------------------------------------------------
class Runner:
    """Runs interventions on the toy world and scores them (caches graphs and activations per prompt)."""

    def __init__(self, model, progress: bool = True):
        self.model, self.progress = model, progress
        self.vocab = len(model.tokenizer)
        self._graphs, self._acts, self._pruned = {}, {}, {}
        self.trials: dict[str, list[Trial]] = {}

    def graph(self, prompt: str):
        from ..attribution.attribute import attribute

        if prompt not in self._graphs:
            self._graphs[prompt] = attribute(self.model, prompt, progress=False)
        return self._graphs[prompt]

    def pruned(self, prompt: str):
        from ..interventions.discovery import graph_features

        if prompt not in self._pruned:
            self._pruned[prompt] = graph_features(self.graph(prompt).prune())
        return self._pruned[prompt]

    def acts(self, prompt: str):
        from ..interventions.discovery import active_features

        if prompt not in self._acts:
            self._acts[prompt] = active_features(self.model, prompt)
        return self._acts[prompt]

    def single_token(self, text: str) -> bool:
        return len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"]) == 1

    def trial(self, name: str, item: str, prompt: str, expected: str, interventions: Callable[[], list],
              heldout: bool | None = None, expect_change: bool = False) -> Trial | None:  # fmt: skip
        """Run interventions() on prompt and score it: the top-1 is `expected` (or, with
        expect_change, is anything but `expected`). None (left out) when `expected` is not one token."""
        import torch

        from ..interventions.recipes import MODE, EmptyRuleError

        if not self.single_token(expected):
            return None
        try:
            ivs = interventions()
        except EmptyRuleError as e:
            t = Trial(item, expected, False, heldout=heldout, error=str(e))
        else:
            result = self.model.intervene(prompt, ivs, mode=MODE)
            probs = torch.softmax(result.logits[-1].double(), -1)
            top_id = int(probs.argmax())
            top = self.model.tokenizer.decode([top_id])
            p_exp = float(probs[self.model.tokenizer(expected, add_special_tokens=False)["input_ids"][0]])
            ok = (top != expected) if expect_change else (top == expected)
            t = Trial(item, expected, ok, top, float(probs[top_id]), p_exp, result.collapsed, heldout)
        self.trials.setdefault(name, []).append(t)
        return t


def _bar(items: Iterable, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(list(items), desc=desc, disable=not progress, leave=False)


# --- two-hop ------------------------------------------------------------------------------------------
def two_hop_prompt(city: str, region) -> str:
    from .corpus import EVAL_TWO_HOP

    return EVAL_TWO_HOP.format(kind=region.kind_word, city=city)


def reference_city(region) -> str:
    """The first city of the next region of the same kind (cyclic): Texas -> California -> Oakland."""
    from . import world

    same = [r for r in world.REGIONS if r.kind == region.kind]
    return same[(same.index(region) + 1) % len(same)].cities[0]


def run_two_hop(runner: Runner, cities: Sequence[tuple[str, object]], targets: Sequence | None = None) -> None:
    """Every experiment of the two-hop family for each (city, region), swaps towards every target region."""
    from . import world
    from .corpus import heldout_cities

    held = set(heldout_cities())
    targets = list(world.REGIONS if targets is None else targets)
    for city, region in _bar(cities, "two-hop cities", runner.progress):
        _two_hop_city(runner, city, region, targets, city in held)


def _two_hop_city(runner: Runner, city: str, region, targets: Sequence, is_held: bool) -> None:
    from ..interventions import recipes as rc

    model = runner.model
    prompt, answer = two_hop_prompt(city, region), " " + region.capital
    reference = two_hop_prompt(reference_city(region), region)

    def found(prompt=prompt, city=city, answer=answer, reference=reference):
        return rc.region_supernodes(model, prompt, city, answer, reference, graph=runner.graph(prompt),
                                    reference_features=runner.acts(reference), pruned=runner.pruned(prompt))  # fmt: skip

    try:
        own = found()
    except rc.EmptyRuleError as e:
        own, error = None, e

    def need(own=own):
        if own is None:
            raise error
        return own

    for factor in (0.0, rc.SUPPRESS):
        runner.trial(f"two_hop.region_x{factor:g}", city, prompt, answer,
                     lambda f=factor: rc.ablate(need().region, f, "region"), is_held, expect_change=True)  # fmt: skip
    for target in targets:
        if target is region:
            continue
        donor = target.cities[0]
        donor_prompt, capital = two_hop_prompt(donor, target), " " + target.capital
        cache: dict = {}

        def replacement(donor=donor, donor_prompt=donor_prompt, capital=capital, cache=cache, prompt=prompt):
            if "r" not in cache:
                cache["r"] = rc.region_replacement(model, donor_prompt, donor, capital, prompt,
                                                   graph=runner.graph(donor_prompt),
                                                   onto_features=runner.acts(prompt),
                                                   pruned=runner.pruned(donor_prompt))  # fmt: skip
            return cache["r"]

        item = f"{city} -> {target.name}"
        runner.trial("two_hop.swap_whole", item, prompt, capital,
                     lambda r=replacement: rc.swap({**need().region, **need().say}, r().specific), is_held)  # fmt: skip
        runner.trial("two_hop.swap_region_only", item, prompt, capital,
                     lambda r=replacement: rc.swap(need().region, r().region), is_held)  # fmt: skip


# --- multilingual ---------------------------------------------------------------------------------------
def opposite_prompt(lang: str, word: str) -> str:
    from .corpus import EVAL_OPPOSITE

    return EVAL_OPPOSITE[lang].format(a=word)


def _space(lang: str) -> str:
    return "" if lang == "zh" else " "


def operand_last(model, lang: str, word: str) -> int:
    """Position (BOS included) of the operand's last token in opposite_prompt(lang, word)."""
    from .corpus import EVAL_OPPOSITE

    prompt = opposite_prompt(lang, word)
    start = len(EVAL_OPPOSITE[lang].split("{a}")[0])
    end = start + len(word)
    enc = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    shift = len(model.tokenize(prompt)) - len(enc["input_ids"])
    return max(i + shift for i, (s, e) in enumerate(enc["offset_mapping"]) if s < end and e > start)


def run_multilingual(runner: Runner, concepts: Sequence[int] | None = None) -> None:
    """Every multilingual experiment for each word of each opposite pair in each language."""
    from . import world

    concepts = range(len(world.OPPOSITES)) if concepts is None else concepts
    words = [(lang, i, j) for lang in LANGS for i in concepts for j in (0, 1)]
    for lang, i, j in _bar(words, "multilingual words", runner.progress):
        _one_word(runner, lang, world.OPPOSITES[i], j)


def _one_word(runner: Runner, lang: str, pair, j: int) -> None:
    from ..interventions import recipes as rc

    model = runner.model
    li = LANGS.index(lang)

    def spec(l: str) -> tuple[str, str, str]:  # (word, prompt, answer) of this concept in language l
        w = pair[LANGS.index(l)][j]
        return w, opposite_prompt(l, w), _space(l) + pair[LANGS.index(l)][1 - j]

    word, prompt, answer = spec(lang)
    item = f"{lang}:{word}"
    target_op = operand_last(model, lang, word)

    def anchors(src_lang: str, src_word: str) -> list[tuple[int, int]]:
        return [(operand_last(model, src_lang, src_word), target_op), (-1, -1)]

    def on_prompt(p: str, src_lang: str, src_word: str, features):
        return rc.onto(model, p, features, prompt, anchors(src_lang, src_word))

    comp = COMPETITOR[lang]
    comp_word, _, comp_answer = spec(comp)
    same_frame, same_word = opposite_prompt(lang, comp_word), opposite_prompt(comp, word)
    frames = {same_frame: (lang, comp_word), same_word: (comp, word), prompt: (lang, word)}
    cache: dict = {}

    def language():
        if "lang" not in cache:
            if not (runner.single_token(answer) and runner.single_token(comp_answer)):
                raise rc.EmptyRuleError(f"{answer!r} or {comp_answer!r} is not one token: favouring needs tokens")
            if answer == comp_answer:
                raise rc.EmptyRuleError(f"{lang} and {comp} share the answer {answer!r}: nothing favours one")
            acts = {p: on_prompt(p, *frames[p], runner.acts(p)) for p in frames if p != prompt}
            anchor_map = {p: anchors(*frames[p]) for p in frames}
            cache["lang"] = rc.language_supernode(model, prompt, answer, comp_answer, same_frame, same_word,
                                                  prompt, anchor_map, acts)  # fmt: skip
        return cache["lang"]

    for factor in (0.0, -1.0, rc.SUPPRESS):
        runner.trial(f"multilingual.language_off_x{factor:g}", item, prompt, comp_answer,
                     lambda f=factor: rc.ablate(language(), f, "language"))  # fmt: skip

    # the language swapped for each other language's (found on its own prompt, contrasted with the
    # prompt and the third language's)
    for new in LANGS:
        if new == lang:
            continue
        new_word, new_prompt, new_answer = spec(new)
        third = next(x for x in LANGS if x not in (lang, new))
        third_word, third_prompt, _ = spec(third)

        def rep(new=new, new_word=new_word, new_prompt=new_prompt, third=third, third_word=third_word,
                third_prompt=third_prompt, cache=cache):  # fmt: skip
            key = ("to", new)
            if key not in cache:
                contrasts = [prompt, third_prompt]
                acts = {prompt: runner.acts(prompt),
                        third_prompt: on_prompt(third_prompt, third, third_word, runner.acts(third_prompt))}  # fmt: skip
                cache[key] = rc.concept_replacement(model, new_prompt, contrasts, prompt,
                                                    {new_prompt: anchors(new, new_word)}, acts,
                                                    graph=runner.graph(new_prompt))  # fmt: skip
            return cache[key]

        for rule, (down, up) in (("paper", (rc.SUPPRESS, rc.INJECT)), ("patch", rc.PATCH)):
            runner.trial(f"multilingual.to_{new}_{rule}", item, prompt, new_answer,
                         lambda r=rep, d=down, u=up: rc.swap(language(), r(), d, u))  # fmt: skip

    # the operand swapped for its opposite: "petit" -> "grand" makes the answer " petit"
    opp_word = pair[li][1 - j]
    opp_prompt = opposite_prompt(lang, opp_word)

    def operand(cache=cache, opp_word=opp_word, opp_prompt=opp_prompt):
        if "operand" not in cache:
            opp_acts = on_prompt(opp_prompt, lang, opp_word, runner.acts(opp_prompt))
            original = rc.concept_supernode(runner.pruned(prompt), opp_acts, f"the {word!r} set")
            new = rc.concept_replacement(model, opp_prompt, [prompt], prompt, {opp_prompt: anchors(lang, opp_word)},
                                         {prompt: runner.acts(prompt)}, graph=runner.graph(opp_prompt))  # fmt: skip
            cache["operand"] = (original, new)
        return cache["operand"]

    for rule, (down, up) in (("paper", (rc.SUPPRESS, rc.INJECT)), ("patch", rc.PATCH)):
        runner.trial(f"multilingual.operand_{rule}", item, prompt, _space(lang) + word,
                     lambda d=down, u=up: rc.swap(*operand(), d, u))  # fmt: skip


# --- the report -------------------------------------------------------------------------------------------
@dataclass
class ExperimentsConfig:
    transcoders: str = "toyworld-clt"
    """transcoder set of the shipped toy world: toyworld-clt or toyworld-plt"""
    out: str = "out/experiments"
    """folder for experiments-<transcoders>.json and the figure (.png, .svg)"""
    cities: str = "all"
    """two-hop cities: all (every city of every region), heldout (one per region) or showcase (Dallas,
    Oakland, Shanghai, Vancouver)"""
    targets: str = "all"
    """target regions of the swaps: all (every other region) or showcase (Texas, California, China,
    British Columbia)"""
    concepts: int = 0
    """multilingual: the first N opposite pairs (0: all)"""
    threads: int = 2
    """torch CPU threads"""
    progress: bool = field(default=True)
    """show progress bars"""

    def __post_init__(self) -> None:
        if self.cities not in ("all", "heldout", "showcase"):
            raise ValueError(f"cities must be all, heldout or showcase, got {self.cities!r}")
        if self.targets not in ("all", "showcase"):
            raise ValueError(f"targets must be all or showcase, got {self.targets!r}")
        if self.concepts < 0:
            raise ValueError(f"concepts must be 0 (all) or a positive count, got {self.concepts}")


def select_cities(which: str) -> list[tuple[str, object]]:
    from . import world
    from .corpus import heldout_cities

    if which == "all":
        return world.all_cities()
    names = set(heldout_cities()) if which == "heldout" else set(world.SHOWCASE)
    return [(c, r) for c, r in world.all_cities() if c in names]


def select_targets(which: str) -> list:
    from . import world

    if which == "all":
        return list(world.REGIONS)
    return [world.region_by_name(world.SHOWCASE[c][0]) for c in world.SHOWCASE]


def run_report(model, config: ExperimentsConfig) -> dict:
    """Run every experiment; the report (summaries and trials) as a JSON-ready dict."""
    t0 = time.perf_counter()
    runner = Runner(model, config.progress)
    run_two_hop(runner, select_cities(config.cities), select_targets(config.targets))
    from . import world

    run_multilingual(runner, range(config.concepts or len(world.OPPOSITES)))
    return {
        "format": FORMAT,
        "version": VERSION,
        "transcoders": config.transcoders,
        "config": {"cities": config.cities, "targets": config.targets, "concepts": config.concepts},
        "seconds": round(time.perf_counter() - t0, 1),
        "experiments": {name: summarize(runner.trials[name]) for name in sorted(runner.trials)},
        "trials": {name: [t.__dict__ for t in runner.trials[name]] for name in sorted(runner.trials)},
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def format_report(report: dict) -> str:
    """The summary table, one experiment a line."""
    lines = [f"toy world experiments, {report['transcoders']} ({report['seconds']:.0f} s)",
             f"{'experiment':<36} {'n':>6} {'success':>8} {'95% CI':>12} {'median p':>9} {'collapsed':>9} "
             f"{'no rule':>7} {'held-out':>9} {'trained':>8}"]  # fmt: skip
    for name, s in report["experiments"].items():
        lo, hi = s["wilson95"]
        p = "-" if s["median_p_expected"] is None else f"{s['median_p_expected']:.3f}"
        held = _pct(s["heldout"]["rate"]) if "heldout" in s else ""
        trained = _pct(s["trained"]["rate"]) if "trained" in s else ""
        lines.append(f"{name:<36} {s['n']:>6} {_pct(s['rate']):>8} {f'{_pct(lo)}-{_pct(hi)}':>12} {p:>9} "
                     f"{s['collapsed']:>9} {s['rule_failed']:>7} {held:>9} {trained:>8}")  # fmt: skip
    return "\n".join(lines)


def draw_report(report: dict, path: str | Path) -> list[Path]:
    """A horizontal bar per experiment: its success rate with the Wilson interval. Writes .png and .svg."""
    from matplotlib.figure import Figure

    names = list(report["experiments"])
    summaries = [report["experiments"][n] for n in names]
    rates = [s["rate"] or 0.0 for s in summaries]
    err = [
        [r - s["wilson95"][0] for r, s in zip(rates, summaries)],
        [s["wilson95"][1] - r for r, s in zip(rates, summaries)],
    ]
    fig = Figure(figsize=(8, 0.35 * len(names) + 1.2))
    ax = fig.add_subplot()
    ax.barh(range(len(names)), rates, xerr=err, color="#4c78a8", ecolor="black", capsize=3)
    ax.set_yticks(range(len(names)), [f"{n} (n={s['n']})" for n, s in zip(names, summaries)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("success rate (95% Wilson interval)")
    ax.set_title(f"toy world experiments, {report['transcoders']}", fontsize=10)
    fig.tight_layout()
    out = []
    for ext in ("png", "svg"):
        p = Path(path).with_suffix(f".{ext}")
        fig.savefig(p, dpi=120)
        out.append(p)
    return out


def write_report(report: dict, out: str | Path) -> tuple[Path, list[Path]]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"experiments-{report['transcoders']}"
    path = stem.with_suffix(".json")
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return path, draw_report(report, stem)


# --- command line ------------------------------------------------------------------------------------------
def add_parser(sub) -> argparse.ArgumentParser:
    """Register `experiments` on the main CLI's subparsers."""
    p = sub.add_parser(
        "experiments", help="measure how often the toy world's intervention experiments generalise",
        description="Run the examples' intervention experiments over every (city, target region) pair and every "
        "word pair in every language; print success rates with 95 percent Wilson intervals, write JSON and a figure. "
        "With every target a city takes about 10 s on 2 CPU cores (--cities heldout: about 12 minutes; all: over an hour).",
    )  # fmt: skip
    p.add_argument("world", choices=["toyworld"], help="the model whose experiments to run (toyworld)")
    p.add_argument("--transcoders", default="toyworld-clt", choices=["toyworld-clt", "toyworld-plt"],
                   help="transcoder set [toyworld-clt]")  # fmt: skip
    p.add_argument("--out", default="out/experiments", help="folder for the JSON and the figure [out/experiments]")
    p.add_argument("--cities", default="all", choices=["all", "heldout", "showcase"],
                   help="two-hop cities: every city, one held-out city per region, or the papers' four [all]")  # fmt: skip
    p.add_argument("--targets", default="all", choices=["all", "showcase"],
                   help="swap targets: every other region, or the papers' four [all]")  # fmt: skip
    p.add_argument("--concepts", type=int, default=0, help="multilingual: the first N opposite pairs, 0 for all [0]")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads [2]")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=cmd_experiments)
    return p


def cmd_experiments(args) -> int:
    import torch

    from ..replacement_model import ReplacementModel

    config = ExperimentsConfig(args.transcoders, args.out, args.cities, args.targets, args.concepts, args.threads,
                               not args.no_progress)  # fmt: skip
    torch.set_num_threads(config.threads)
    model = ReplacementModel.from_pretrained("toyworld", config.transcoders)
    report = run_report(model, config)
    print(format_report(report))
    path, figures = write_report(report, config.out)
    print(f"\nreport: {path}\nfigure: {', '.join(map(str, figures))}")
    return 0
