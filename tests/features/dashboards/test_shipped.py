"""The toy world ships its dashboards (PLT and CLT): small, named, labelled, searchable."""

import pytest

from circuit_atlas.features.dashboards import find_dashboards, load_dashboard, open_dashboards
from circuit_atlas.features.dashboards.search import search
from circuit_atlas.zoo import ZOO_DIR

MAX_BYTES = 6_000_000  # both sets together: the package stays small


def test_shipped_dashboards_are_small():
    total = sum(p.stat().st_size for p in (ZOO_DIR / "toyworld" / "dashboards").rglob("*") if p.is_file())
    assert 0 < total < MAX_BYTES, total


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_shipped_dashboards_read_and_search(kind):
    name = f"toyworld-{kind}"
    found = find_dashboards(name)
    assert found == ZOO_DIR / "toyworld" / "dashboards" / kind
    dash = open_dashboards(found)
    assert (dash.info["transcoders"], dash.info["model"], dash.info["kind"]) == (name, "toyworld", kind)
    assert dash.n_layers == 4 and all(dash.width(l) == 1024 for l in range(4))
    assert not (found / "state.safetensors").exists()  # not shipped: rebuild rather than extend
    hits = search(found, promotes=" Austin")
    assert hits
    d = load_dashboard(name, hits[0].layer, hits[0].index)
    assert " Austin" in [t for t, _ in d.top_logits[:5]] and d.label and d.label_source == "automatic"
    labels = dash.labels()
    assert len(labels) == 4096 and all(labels.values())


def test_graph_nodes_get_the_shipped_labels():
    from circuit_atlas import ReplacementModel
    from circuit_atlas.attribution.attribute import attribute
    from circuit_atlas.features.dashboards import graph_labels
    from circuit_atlas.graph.graph import FEATURE

    model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    graph = attribute(model, "The capital of the state containing Dallas is", max_feature_nodes=20, progress=False)
    labels = graph_labels(graph, "toyworld-clt")
    features = [i for i, k in enumerate(graph.kind.tolist()) if k == FEATURE]
    assert features and set(labels) == set(features)
    i = features[0]
    want = load_dashboard("toyworld-clt", int(graph.layer[i]), int(graph.feature[i])).label
    assert labels[i] == want
