"""What the intervention examples share: arguments, printing, one experiment = one diagram, and
the measured figures, written to results.json (the figures the READMEs state are checked against
it by tests/docs/test_figures.py).

results.json: {"format", "version", script: {transcoders: {"prompt", "mode", "clean": {"top",
"key"}, "experiments": {name: {"top": [[token, p], ...] (5 most probable), "key": {token: p},
"features_edited", "expected", "agrees"}}, "facts": {...}}}}, probabilities rounded to 6 decimals.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from circuit_atlas import ReplacementModel
from circuit_atlas.interventions import Intervention
from circuit_atlas.interventions.figure import draw_intervention_graph
from circuit_atlas.interventions.recipes import MODE
from circuit_atlas.interventions.supernodes import InterventionGraph, top_k_tokens

RESULTS = Path(__file__).resolve().parent / "results.json"
RESULTS_FORMAT, RESULTS_VERSION = "circuit-atlas-example-results", 1
DIGITS = 6  # probabilities in results.json


def parse_args(doc: str, name: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=f"out/{name}", help="folder for the figures (PNG and SVG)")
    ap.add_argument("--transcoders", default="toyworld-clt", help="toyworld-clt or toyworld-plt")
    ap.add_argument("--results", default=str(RESULTS), help="JSON file the measured figures go into [%(default)s]")
    return ap.parse_args()


@dataclass(frozen=True)
class Expect:
    """What the papers saw, in words, and the top tokens that agree with it: one of `tops`, or
    (without tops) anything but `not_tops`."""

    text: str
    tops: Collection[str] = ()
    not_tops: Collection[str] = ()

    def agrees(self, top: str) -> bool:
        return top in self.tops if self.tops else top not in self.not_tops


def rounded(tokens_probs) -> list[list]:
    return [[t, round(p, DIGITS)] for t, p in tokens_probs]


def write_results(script: str, transcoders: str, results: dict, path: str | Path = RESULTS) -> Path:
    """Put one run's figures into the results file (the other scripts' and transcoders' stay)."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    if data and (data.get("format"), data.get("version")) != (RESULTS_FORMAT, RESULTS_VERSION):
        raise ValueError(f"{path} is not a version-{RESULTS_VERSION} {RESULTS_FORMAT} file; move it away first")
    data.update({"format": RESULTS_FORMAT, "version": RESULTS_VERSION})
    data.setdefault(script, {})[transcoders] = results
    ordered = {k: data[k] for k in ("format", "version")} | {
        k: data[k] for k in sorted(data) if k not in ("format", "version")
    }
    path.write_text(json.dumps(ordered, indent=1, ensure_ascii=False) + "\n")
    return path


def load(transcoders: str) -> ReplacementModel:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return ReplacementModel.from_pretrained("toyworld", transcoders)


def show(tokens_probs: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{t!r} {p:.1%}" for t, p in tokens_probs)


def token_probs(model, logits: torch.Tensor, tokens: Sequence[str]) -> dict[str, float]:
    probs = torch.softmax(logits.double(), -1)
    return {t: float(probs[model.tokenizer(t, add_special_tokens=False)["input_ids"][0]]) for t in tokens}


class Experiments:
    """Runs interventions on one prompt and draws each as an intervention diagram.

    make_graph() builds a fresh InterventionGraph (rows, arrows, default activations) for each
    experiment, so badges and replacement nodes never leak from one experiment into the next.
    out=None measures without drawing. `figures` holds what each run measured, for results.json.
    """

    def __init__(self, model, prompt: str, make_graph: Callable[[], InterventionGraph], out: str | Path | None,
                 key_tokens: Sequence[str] = (), mode=MODE):  # fmt: skip
        self.model, self.prompt, self.make_graph, self.mode = model, prompt, make_graph, mode
        self.out = None if out is None else Path(out)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        self.key_tokens = list(key_tokens)
        self.clean = model.intervene(prompt, [], mode=mode)
        self.results: dict[str, dict] = {}
        self.figures: dict[str, dict] = {}

    def top(self, logits: torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
        return top_k_tokens(logits[-1], self.model.tokenizer, k)

    def run(self, name: str, title: str, interventions: Sequence[Intervention], marks: dict[str, str],
            replacement: tuple[str, object, dict] | None = None, expect: Expect | None = None) -> dict:  # fmt: skip
        """Intervene, print before/after, draw `out/name.{png,svg}`; returns what was measured.

        marks: {supernode name: badge} for the diagram; replacement: (name of the node it replaces,
        the replacement Supernode, its injected activations); expect: what the papers saw, checked
        against this run and said to agree or not.
        """
        clean = self.clean
        result = self.model.intervene(self.prompt, list(interventions), mode=self.mode)
        graph = self.make_graph()
        for node, label in marks.items():
            graph.mark_intervention(node, label)
        if replacement is not None:
            original, node, activations = replacement
            graph.add_replacement(original, node, activations)
        graph.set_current(result.activations)
        top = self.top(result.logits)
        graph.set_top_logits(top)
        if self.out is not None:
            draw_intervention_graph(graph, self.out / name)

        before, after = (
            token_probs(self.model, clean.logits[-1], self.key_tokens),
            token_probs(self.model, result.logits[-1], self.key_tokens),
        )
        fractions = {n: graph.fraction(n) for n in graph.nodes}
        n_features = sum(
            len(iv.subject.all_features()) if hasattr(iv.subject, "all_features") else 1 for iv in interventions
        )
        print(f"\n== {title}  [{name}, mode={self.mode}, {n_features} features edited]")
        print(f"   before: {show(self.top(clean.logits))}")
        print(f"   after:  {show(top)}")
        if self.key_tokens:
            print("   key tokens: " + ", ".join(f"{t!r} {before[t]:.1%} -> {after[t]:.1%}" for t in self.key_tokens))
        print("   supernodes (activation vs clean): "
              + ", ".join(f"{n} {f:.0%}" for n, f in fractions.items() if f is not None))  # fmt: skip
        agrees = None
        if expect is not None:
            agrees = expect.agrees(top[0][0])
            verdict = "agrees" if agrees else f"CONTRADICTED by this run: the top output is {show(top[:1])}"
            print(f"   paper: {expect.text} -> {verdict}")
        measured = {"top": top, "key": after, "fractions": fractions, "logits": result.logits[-1], "agrees": agrees}
        self.results[name] = measured
        self.figures[name] = {"top": rounded(top), "key": {t: round(p, DIGITS) for t, p in after.items()},
                              "features_edited": n_features, "expected": expect.text if expect else None,
                              "agrees": agrees}  # fmt: skip
        return measured

    def summary(self, **facts) -> dict:
        """Everything measured on this prompt, for results.json."""
        clean = token_probs(self.model, self.clean.logits[-1], self.key_tokens)
        return {
            "prompt": self.prompt,
            "mode": self.mode,
            "clean": {
                "top": rounded(self.top(self.clean.logits)),
                "key": {t: round(p, DIGITS) for t, p in clean.items()},
            },
            "experiments": self.figures,
            "facts": facts,
        }
