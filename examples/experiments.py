"""What the intervention examples share: arguments, printing, one experiment = one diagram."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from circuit_atlas import ReplacementModel
from circuit_atlas.interventions import Intervention
from circuit_atlas.interventions.figure import draw_intervention_graph
from circuit_atlas.interventions.supernodes import InterventionGraph, top_k_tokens

MODE = "frozen_attention"  # the papers': attention patterns held at the clean prompt's, the rest live
SUPPRESS, INJECT = -2.0, 2.0  # the papers' multipliers: a supernode x-2, a replacement at +2x its activation


def parse_args(doc: str, name: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=f"out/{name}", help="folder for the figures (PNG and SVG)")
    ap.add_argument("--transcoders", default="toyworld-clt", help="toyworld-clt or toyworld-plt")
    return ap.parse_args()


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
    """

    def __init__(self, model, prompt: str, make_graph: Callable[[], InterventionGraph], out: str | Path,
                 key_tokens: Sequence[str] = (), mode=MODE):  # fmt: skip
        self.model, self.prompt, self.make_graph, self.mode = model, prompt, make_graph, mode
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.key_tokens = list(key_tokens)
        self.clean = model.intervene(prompt, [])
        self.results: dict[str, dict] = {}

    def top(self, logits: torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
        return top_k_tokens(logits[-1], self.model.tokenizer, k)

    def run(self, name: str, title: str, interventions: Sequence[Intervention], marks: dict[str, str],
            replacement: tuple[str, object, dict] | None = None) -> dict:  # fmt: skip
        """Intervene, print before/after, draw `out/name.{png,svg}`; returns what was measured.

        marks: {supernode name: badge} for the diagram; replacement: (name of the node it replaces,
        the replacement Supernode, its injected activations).
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
        measured = {"top": top, "key": after, "fractions": fractions, "logits": result.logits[-1]}
        self.results[name] = measured
        return measured
