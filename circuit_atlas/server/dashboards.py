"""Feature dashboards as the server sees them: found by transcoder-set name, never by a path.

A name from a URL is either a shipped set (`toyworld-clt`) or a folder name under the data
folder's `dashboards/` (where `circuit-atlas features build --out DATA/dashboards/NAME` puts
them). It is never joined as a path elsewhere, so no URL reaches outside the data folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from circuit_atlas.features.dashboards.reader import ZOO_DASHBOARDS, find_dashboards
from circuit_atlas.features.dashboards.store import open_dashboards

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def dashboards_dir(data_dir: Path, transcoders: str | None) -> Path | None:
    """The dashboards folder for a transcoder-set name, or None when none is built (or the name is unsafe)."""
    if not transcoders:
        return None
    if transcoders in ZOO_DASHBOARDS:
        return find_dashboards(transcoders)
    if not _NAME.fullmatch(transcoders) or ".." in transcoders:
        return None
    return find_dashboards(Path(data_dir) / "dashboards" / transcoders)


def feature_json(data_dir: Path, transcoders: str, layer: int, index: int) -> dict:
    """circuit-tracer / Neuronpedia feature JSON of one feature (FileNotFoundError / ValueError otherwise)."""
    found = dashboards_dir(data_dir, transcoders)
    if found is None:
        raise FileNotFoundError(
            f"no feature dashboards for transcoder set {transcoders!r}: build them with `circuit-atlas features build "
            f"--model M --transcoders T --data FILE --out DATA/dashboards/{transcoders}`"
        )
    return open_dashboards(found).dashboard(int(layer), int(index)).to_json()


def feature_labels(data_dir: Path, transcoders: str | None) -> dict[tuple[int, int], str]:
    """{(layer, index): label} from the set's dashboards (automatic, or a person's set there); {} when none."""
    found = dashboards_dir(data_dir, transcoders)
    if found is None:
        return {}
    try:
        return open_dashboards(found).labels()
    except (OSError, ValueError):  # a corrupt dashboard folder must not take the graph view down
        return {}


def search_features(data_dir: Path, transcoders: str, *, label: str | None = None, fires_on: str | None = None,
                    promotes: str | None = None, limit: int = 20) -> list[dict]:  # fmt: skip
    """Features of a set by label text, a token they fire on, or a token they promote (best first)."""
    from circuit_atlas.features.dashboards.search import search

    found = dashboards_dir(data_dir, transcoders)
    if found is None:
        raise FileNotFoundError(f"no feature dashboards for transcoder set {transcoders!r}")
    hits = search(found, label=label, fires_on=fires_on, promotes=promotes, limit=limit)
    return [{"layer": h.layer, "index": h.index, "label": h.label, "score": h.score} for h in hits]
