"""Automatic labels from a feature's statistics, and labels a person writes (which win everywhere).

Automatic: the token the feature fires on in most of its top examples (or the two-token span when
one span dominates), then the tokens its decoder promotes most:  "' Dallas' → ' Texas', ' TX'".
Person-written labels live in labels.json beside the dashboards, never rewritten by a build.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

LABELS_FILE = "labels.json"
LABELS_FORMAT, LABELS_VERSION = "circuit-atlas-feature-labels", 1
SPAN_SHARE = 0.6  # a two-token span becomes the label when it is the context of this share of top examples


def automatic_label(
    max_tokens: list[str], prev_tokens: list[str | None], promoted: list[str], n_promoted: int = 2
) -> str:
    """Label from the max tokens of the top examples (with the token before each) and promoted tokens."""
    if not max_tokens:
        return "dead feature (never active)"
    token, n = Counter(max_tokens).most_common(1)[0]
    spans = Counter((p, t) for p, t in zip(prev_tokens, max_tokens) if p is not None)
    head = repr(token)
    if spans:
        (p, t), m = spans.most_common(1)[0]
        if m >= SPAN_SHARE * len(max_tokens) and t == token:
            head = repr(p + t)
    if n < len(max_tokens) / 2:
        head += " …"  # no single token dominates
    if promoted:
        head += " → " + ", ".join(repr(t) for t in promoted[:n_promoted])
    return head


def read_labels(directory: str | os.PathLike) -> dict[tuple[int, int], str]:
    """Person-written labels {(layer, index): text} of a dashboards folder ({} when there are none)."""
    path = Path(directory) / LABELS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("format") != LABELS_FORMAT:
            raise ValueError("not a labels file")
        return {(int(e["layer"]), int(e["index"])): str(e["label"]) for e in data["labels"]}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a circuit-atlas labels file ({err}); fix or delete it") from err


def set_label(directory: str | os.PathLike, layer: int, index: int, label: str | None) -> None:
    """Write (or with None, remove) the person-written label of one feature, atomically."""
    directory = Path(directory)
    labels = read_labels(directory)
    if label is None or not label.strip():
        labels.pop((layer, index), None)
    else:
        labels[(layer, index)] = label.strip()
    body = {"format": LABELS_FORMAT, "version": LABELS_VERSION,
            "labels": [{"layer": l, "index": i, "label": t} for (l, i), t in sorted(labels.items())]}  # fmt: skip
    fd, tmp = tempfile.mkstemp(prefix=".labels-", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=1, ensure_ascii=False)
    os.replace(tmp, directory / LABELS_FILE)
