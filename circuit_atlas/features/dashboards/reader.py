"""Where a transcoder set's dashboards are, and one feature's dashboard: what the server calls.

    find_dashboards("toyworld-clt")        -> Path of the shipped folder (or None)
    find_dashboards("/path/to/transcoders") -> /path/to/transcoders/dashboards (if built there)
    load_dashboard("toyworld-clt", 1, 42)   -> FeatureDashboard (.to_json() for the viewers)
    feature_labels("toyworld-clt")          -> {(layer, index): label}

Lookup order for a name or path N: N itself when it holds dashboards.sqlite; a shipped zoo name
(circuit_atlas/zoo/<entry>/dashboards/<kind>); N/dashboards beside a transcoder set; then
<root>/<N> and <root>/<N>/dashboards for each extra root (the server's data folder).
"""

from __future__ import annotations

import os
from pathlib import Path

from .dashboard import FeatureDashboard
from .store import DB_FILE, open_dashboards

ZOO_DASHBOARDS = {"toyworld-plt": "toyworld/dashboards/plt", "toyworld-clt": "toyworld/dashboards/clt"}


def find_dashboards(transcoders: str | os.PathLike, roots: list[str | os.PathLike] = ()) -> Path | None:
    """The dashboards folder of a transcoder set (name or directory), or None when none is built."""
    from ...zoo import ZOO_DIR

    p = Path(transcoders).expanduser()
    candidates = [p, p / "dashboards"]
    if isinstance(transcoders, str) and transcoders in ZOO_DASHBOARDS:
        candidates.insert(0, ZOO_DIR / ZOO_DASHBOARDS[transcoders])
    for root in roots:
        candidates += [Path(root) / str(transcoders), Path(root) / str(transcoders) / "dashboards"]
    for c in candidates:
        if (c / DB_FILE).is_file():
            return c
    return None


def load_dashboard(dir_or_name: str | os.PathLike, layer: int, index: int,
                   roots: list[str | os.PathLike] = ()) -> FeatureDashboard:  # fmt: skip
    """One feature's dashboard. FileNotFoundError when the set has none, ValueError for a bad layer/index
    or a corrupt file."""
    found = find_dashboards(dir_or_name, roots)
    if found is None:
        raise FileNotFoundError(
            f"no feature dashboards for {str(dir_or_name)!r}; build them with `circuit-atlas features build "
            f"--model M --transcoders {dir_or_name} --data FILE --out DIR`"
        )
    return open_dashboards(found).dashboard(int(layer), int(index))


def feature_labels(transcoders: str | os.PathLike, roots: list[str | os.PathLike] = ()) -> dict[tuple[int, int], str]:
    """{(layer, index): label} of every feature of a set (a person's label over the automatic one);
    {} when the set has no dashboards. For graph nodes, the demo and the server."""
    found = find_dashboards(transcoders, roots)
    return {} if found is None else open_dashboards(found).labels()


def graph_labels(graph, transcoders: str | os.PathLike, roots: list[str | os.PathLike] = ()) -> dict[int, str]:
    """{node index: label} for the feature nodes of an attribution graph (the viewers' "clerp")."""
    from ...graph.graph import FEATURE

    labels = feature_labels(transcoders, roots)
    if not labels:
        return {}
    kind, layer, feature = graph.kind.tolist(), graph.layer.tolist(), graph.feature.tolist()
    return {i: labels[(l, f)] for i, (k, l, f) in enumerate(zip(kind, layer, feature))
            if k == FEATURE and (l, f) in labels}  # fmt: skip
