"""Display, feature JSON (against Neuronpedia's schema), the viewer folder export, search and labels."""

import json
import shutil

import jsonschema
import pytest
from shared import SHARED

from circuit_atlas.cli import main
from circuit_atlas.features.dashboards import find_dashboards, load_dashboard, open_dashboards, set_label
from circuit_atlas.features.dashboards.export import cantor, export_folder
from circuit_atlas.features.dashboards.search import search

SCHEMA = SHARED / "real_graphs" / "schemas" / "feature-details-schema.json"


def _some_features(out):
    dash = open_dashboards(out)
    busy = dash.con.execute("SELECT layer, idx FROM features ORDER BY count DESC LIMIT 3").fetchall()
    dead = dash.con.execute("SELECT layer, idx FROM features WHERE count = 0 LIMIT 1").fetchall()
    return busy + dead


def test_feature_json_is_valid_against_the_schema(clt_dir):
    schema = json.loads(SCHEMA.read_text())
    for layer, f in _some_features(clt_dir):
        d = load_dashboard(clt_dir, layer, f)
        j = d.to_json()
        jsonschema.validate(j, schema)
        assert j["index"] == cantor(layer, f) and (j["layer"], j["feature"]) == (layer, f)
        assert j["examples_quantiles"][0]["quantile_name"] == "Top activations"
        assert j["activation_frequency"] == pytest.approx(d.count / d.n_tokens)
        for group in j["examples_quantiles"]:
            for e in group["examples"]:
                assert len(e["tokens"]) == len(e["tokens_acts_list"])
                assert (
                    e["tokens_acts_list"][e["train_token_ind"]] == max(e["tokens_acts_list"])
                    or group["quantile_name"] != "Top activations"
                )


def test_repeated_contexts_are_marked(clt_dir):
    dash = open_dashboards(clt_dir)
    marked = 0
    for layer, f in dash.con.execute("SELECT layer, idx FROM features ORDER BY count DESC LIMIT 40").fetchall():
        seen = set()
        for band in dash.dashboard(layer, f).bands:
            for e in band.examples:
                assert e.repeated == (tuple(e.token_ids) in seen)
                seen.add(tuple(e.token_ids))
                marked += e.repeated
    assert marked > 0  # the toy corpus repeats sentences


def test_export_folder_layout(clt_dir, tmp_path):
    folder = export_folder(clt_dir, tmp_path / "features", scan="toy-clt", progress=False)
    dash = open_dashboards(clt_dir)
    total = sum(dash.width(l) for l in range(dash.n_layers))
    files = [p for p in folder.iterdir() if p.name != "index.json"]
    assert len(files) == total
    layer, f = _some_features(clt_dir)[0]
    written = json.loads((folder / f"{cantor(layer, f)}.json").read_text())
    assert written == json.loads(json.dumps(load_dashboard(clt_dir, layer, f).to_json("toy-clt")))
    index = json.loads((folder / "index.json").read_text())
    assert index["scan"] == "toy-clt" and len(index["features"]) == total


def test_show_text_json_and_figure(clt_dir, tmp_path, capsys):
    layer, f = _some_features(clt_dir)[0]
    d = load_dashboard(clt_dir, layer, f)
    text = d.text()
    top = d.top_examples[0]
    assert f"[[{top.tokens[top.max_index]}]]" in text and d.label in text
    assert main(["features", "show", str(clt_dir), str(layer), str(f), "--figure", str(tmp_path / "fig")]) == 0
    assert "Top activations" in capsys.readouterr().out
    assert (tmp_path / "fig.png").stat().st_size > 1000 and (tmp_path / "fig.svg").read_text().startswith("<?xml")
    assert main(["features", "show", str(clt_dir), str(layer), str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(d.to_json()))
    assert main(["features", "show", str(clt_dir), "9", "0"]) == 2
    assert "layer 9 is out of range" in capsys.readouterr().err


def test_search_by_promoted_and_fired_token(clt_dir):
    dash = open_dashboards(clt_dir)
    want = set()
    for l in range(dash.n_layers):
        for f in range(dash.width(l)):
            d = dash.dashboard(l, f)
            if " Austin" in [t for t, _ in d.top_logits[:5]]:
                want.add((l, f))
    hits = search(clt_dir, promotes=" Austin", limit=10_000)
    assert want and {(h.layer, h.index) for h in hits} == want
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    token = dash.dashboard(*_some_features(clt_dir)[0]).top_examples[0]
    token = token.tokens[token.max_index]
    fired = search(clt_dir, fires_on=token, limit=10_000)
    assert fired
    for h in fired[:20]:
        assert token in [e.tokens[e.max_index] for e in dash.dashboard(h.layer, h.index).top_examples]
    with pytest.raises(ValueError, match="search needs"):
        search(clt_dir)


def test_a_person_label_overrides_the_automatic_one(clt_dir, tmp_path, capsys):
    out = tmp_path / "dash"
    shutil.copytree(clt_dir, out)
    layer, f = _some_features(out)[0]
    auto = load_dashboard(out, layer, f)
    assert auto.label_source == "automatic" and auto.label == auto.automatic_label
    assert main(["features", "label", str(out), str(layer), str(f), "two-hop capital mover"]) == 0
    d = load_dashboard(out, layer, f)
    assert (d.label, d.label_source) == ("two-hop capital mover", "user")
    assert d.to_json()["label"] == "two-hop capital mover"
    assert [(h.layer, h.index) for h in search(out, label="capital mover")] == [(layer, f)]
    set_label(out, layer, f, None)
    assert load_dashboard(out, layer, f).label == auto.label


def test_find_dashboards(clt_dir, tmp_path):
    assert find_dashboards(clt_dir) == clt_dir
    assert find_dashboards(tmp_path) is None
    (tmp_path / "set").mkdir()
    shutil.copytree(clt_dir, tmp_path / "set" / "dashboards")
    assert find_dashboards(tmp_path / "set") == tmp_path / "set" / "dashboards"
    assert find_dashboards("set", roots=[tmp_path]) == tmp_path / "set" / "dashboards"
    with pytest.raises(FileNotFoundError, match="features build"):
        load_dashboard(tmp_path / "nothing", 0, 0)
