"""Find features: by label text, by a token they fire on, by a token they promote.

    search(dir, label="capital")           features whose label (a person's, else automatic) contains it
    search(dir, fires_on=" Dallas")         features whose top examples peak on that token
    search(dir, promotes=" Austin")         features whose decoder pushes that token up most
A token is matched by its exact text first, then with surrounding spaces ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .store import open_dashboards


@dataclass
class Hit:
    layer: int
    index: int
    label: str
    score: float  # fires_on: share of top examples; promotes: logit effect; label: activation frequency


def _token_ids(dash, token: str) -> list[int]:
    exact = [i for i, t in dash.vocab.items() if t == token]
    return exact or [i for i, t in dash.vocab.items() if t.strip() == token.strip() and t.strip()]


def search(directory: str | os.PathLike, *, label: str | None = None, fires_on: str | None = None,
           promotes: str | None = None, limit: int = 20) -> list[Hit]:  # fmt: skip
    """Features matching every criterion given, best first (see the module docstring)."""
    if label is None and fires_on is None and promotes is None:
        raise ValueError("search needs a label text, a token it fires on or a token it promotes")
    dash = open_dashboards(directory)
    labels = dash.labels()
    scores: dict[tuple[int, int], float] | None = None

    def narrow(found: dict[tuple[int, int], float]) -> None:
        nonlocal scores
        scores = found if scores is None else {k: v for k, v in scores.items() if k in found}

    for token, table, column in ((fires_on, "fires", "weight"), (promotes, "promotes", "value")):
        if token is None:
            continue
        ids = _token_ids(dash, token)
        found: dict[tuple[int, int], float] = {}
        for i in ids:
            for l, f, v in dash.con.execute(f"SELECT layer, idx, {column} FROM {table} WHERE token = ?", (i,)):
                found[(l, f)] = max(found.get((l, f), float("-inf")), v)
        narrow(found)
    if label is not None:
        needle = label.lower()
        counts = {(l, f): c for l, f, c in dash.con.execute("SELECT layer, idx, count FROM features")}
        narrow({k: counts[k] / max(dash.info["n_tokens"], 1) for k, t in labels.items() if needle in t.lower()})
    hits = [Hit(l, f, labels.get((l, f), ""), v) for (l, f), v in (scores or {}).items()]
    hits.sort(key=lambda h: (-h.score, h.layer, h.index))
    return hits[:limit]
