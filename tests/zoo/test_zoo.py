"""Shipped-entry names and the rebuild comparison."""

import pytest

from circuit_atlas.zoo import resolve_model, resolve_transcoders
from circuit_atlas.zoo.rebuild import TOLERANCE, compare


def test_paths_pass_through(tmp_path):
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_transcoders(str(tmp_path)) == tmp_path


def test_missing_entry_names_the_rebuild_command(monkeypatch, tmp_path):
    import circuit_atlas.zoo as zoo

    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="circuit-atlas zoo rebuild toyworld"):
        zoo.resolve_model("toyworld")


def _manifest(acc, fvu, l0, top1):
    m = {"fvu_mean": fvu, "l0_mean": l0, "top1_agreement": top1}
    return {"model": {"accuracy": {"two_hop_heldout": acc}}, "plt": m, "clt": dict(m)}


def test_compare_flags_figures_outside_tolerance():
    shipped = _manifest(0.96, 0.02, 16.0, 0.94)
    same = compare(_manifest(0.96 + TOLERANCE["accuracy"] / 2, 0.021, 16.5, 0.935), shipped)
    assert len(same) == 7 and all(line.endswith("ok") for line in same)
    off = compare(_manifest(0.80, 0.02, 16.0, 0.94), shipped)
    assert [line.split()[1] for line in off if line.endswith("OFF")] == ["two_hop_heldout"]
