"""End-to-end training on a tiny model: it learns, it loads, it resumes exactly, it refuses mismatches."""

import json
from pathlib import Path

import pytest
import torch

from circuit_atlas import ReplacementModel
from circuit_atlas.training import TrainConfig, train_transcoders
from circuit_atlas.transcoders import load_transcoders

TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip")


def assert_same_weights(a, b, atol=0.0):
    for key in TENSORS:
        xs, ys = getattr(a, key), getattr(b, key)
        assert (xs is None) == (ys is None), key
        for x, y in zip(xs or [], ys or []):
            torch.testing.assert_close(x, y, rtol=0, atol=atol, msg=key)


@pytest.mark.parametrize(
    "settings",
    [dict(kind="plt", activation="jumprelu"), dict(kind="clt", activation="jumprelu", skip=True),
     dict(kind="plt", activation="topk", k=6, pack_documents=False), dict(kind="clt", activation="batchtopk", k=6)],
    ids=["plt-jumprelu", "clt-jumprelu-skip", "plt-topk-unpacked", "clt-batchtopk"],
)  # fmt: skip
def test_training_reduces_fvu_and_writes_a_loadable_set(settings, small_config, model_dir, data_file, tmp_path):
    first = train_transcoders(model_dir, data_file, tmp_path / "one", small_config(steps=1, **settings), progress=False)
    result = train_transcoders(model_dir, data_file, tmp_path / "tc", small_config(steps=40, lr=1e-2, **settings),
                               progress=False)  # fmt: skip
    m = json.loads((tmp_path / "tc" / "metrics.json").read_text())
    assert m == result.metrics
    assert m["fvu_mean"] < 0.8 * first.metrics["fvu_mean"]
    assert len(m["fvu"]) == len(m["l0"]) == len(m["dead_fraction"]) == 3
    assert 0 <= m["top1_agreement"] <= 1 and m["kl"] >= 0 and 0 <= m["dead_fraction_mean"] <= 1
    if settings["activation"] == "topk":
        assert m["l0_mean"] == pytest.approx(6)
    tc = load_transcoders(tmp_path / "tc")
    assert tc.kind == settings["kind"] and tc.has_skip == settings.get("skip", False)
    assert tc.activation == {"batchtopk": "jumprelu"}.get(settings["activation"], settings["activation"])
    assert tc.metadata["training"]["activation"] == settings["activation"]
    rm = ReplacementModel.from_pretrained(model_dir, tmp_path / "tc")
    assert rm.freeze("The capital of Texas is").run is not None
    assert not (tmp_path / "tc.checkpoint").exists()


def test_resume_equals_uninterrupted_run(small_config, model_dir, data_file, tmp_path):
    cfg = small_config(kind="clt", skip=True, steps=6, checkpoint_every=2)
    full = train_transcoders(model_dir, data_file, tmp_path / "full", cfg, progress=False)
    part = train_transcoders(model_dir, data_file, tmp_path / "part", cfg, stop_at_step=3, progress=False)
    assert part.path is None and part.step == 3 and not (tmp_path / "part").exists()
    assert (tmp_path / "part.checkpoint" / "state.json").exists()
    with pytest.raises(ValueError, match="--resume"):
        train_transcoders(model_dir, data_file, tmp_path / "part", cfg, progress=False)
    resumed = train_transcoders(model_dir, data_file, tmp_path / "part", cfg, resume=True, progress=False)
    assert resumed.step == 6
    assert_same_weights(load_transcoders(tmp_path / "full"), load_transcoders(tmp_path / "part"))
    assert resumed.metrics["fvu"] == full.metrics["fvu"]


def test_resume_refuses_a_mismatching_checkpoint(small_config, model_dir, data_file, tmp_path):
    out = tmp_path / "tc"
    train_transcoders(model_dir, data_file, out, small_config(), stop_at_step=2, progress=False)
    state = (tmp_path / "tc.checkpoint" / "state.json").read_text()
    with pytest.raises(ValueError, match=r"does not match.*width: 48 != 32.*lr"):
        train_transcoders(model_dir, data_file, out, small_config(width=32, lr=5e-3), resume=True, progress=False)
    other = tmp_path / "other.txt"
    other.write_text("The capital of Texas is Austin .\n" * 300)
    with pytest.raises(ValueError, match="does not match.*data"):
        train_transcoders(model_dir, other, out, small_config(), resume=True, progress=False)
    assert (tmp_path / "tc.checkpoint" / "state.json").read_text() == state  # untouched
    assert not out.exists()


def test_a_failed_run_leaves_the_previous_set_in_place(small_config, model_dir, data_file, tmp_path):
    out = tmp_path / "tc"
    train_transcoders(model_dir, data_file, out, small_config(steps=2), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(ValueError, match="empty"):
        train_transcoders(model_dir, empty, out, small_config(steps=2), force=True, progress=False)
    with pytest.raises(ValueError, match="k = 64 .* width 48"):
        train_transcoders(
            model_dir, data_file, out, small_config(activation="topk", k=64, target_l0=None), force=True, progress=False
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["tc", "empty.txt"])  # no staging left over


def test_default_width_is_checked_against_the_model(model_dir, data_file, tmp_path):
    cfg = TrainConfig(target_l0=300, steps=1, batch_tokens=256, seq_len=16)  # width 8 * 32 = 256
    with pytest.raises(ValueError, match="target_l0 = 300 cannot be reached with width 256"):
        train_transcoders(model_dir, data_file, tmp_path / "tc", cfg, progress=False)


def test_an_existing_set_is_replaced_only_with_force_or_by_its_own_resumed_run(small_config, model_dir, data_file,
                                                                                tmp_path):  # fmt: skip
    out = tmp_path / "tc"
    train_transcoders(model_dir, data_file, out, small_config(steps=2), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(
        ValueError, match=r"already holds a transcoder set \(plt jumprelu, 3 layers x 48 features.*--force"
    ):
        train_transcoders(model_dir, data_file, out, small_config(steps=2, seed=1), progress=False)
    # --resume without a checkpoint would start afresh: the set there is from a finished run
    with pytest.raises(ValueError, match="no checkpoint at .* to resume .*--force"):
        train_transcoders(model_dir, data_file, out, small_config(steps=2, seed=1), resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a resumed run continues the run that replaces it
    train_transcoders(model_dir, data_file, out, small_config(steps=4), stop_at_step=2, force=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not written yet
    train_transcoders(model_dir, data_file, out, small_config(steps=4), resume=True, progress=False)
    assert load_transcoders(out).metadata["steps"] == 4
    train_transcoders(model_dir, data_file, out, small_config(steps=2), force=True, progress=False)
    assert load_transcoders(out).metadata["steps"] == 2


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_ordinary_permissions_of_the_umask(umask, small_config, model_dir, data_file, tmp_path):
    """Like the JSON beside them: safetensors (0600) and mkdtemp (0700) alone would make them private."""
    import os
    import stat

    def modes(root):
        return {p.name: stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}

    old = os.umask(umask)
    try:
        out = tmp_path / "tc"
        train_transcoders(model_dir, data_file, out, small_config(steps=4), stop_at_step=2, progress=False)
        ckpt = modes(tmp_path / "tc.checkpoint")
        train_transcoders(model_dir, data_file, out, small_config(steps=4), resume=True, progress=False)
        final = modes(out)
    finally:
        os.umask(old)
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    assert ckpt == {"tc.checkpoint": dir_mode, "state.json": file_mode, "state.safetensors": file_mode}
    assert final == {"tc": dir_mode, **{name: file_mode for name in final if name != "tc"}}
    assert "layer_0.safetensors" in final and "metrics.json" in final


def test_poor_results_warn_in_plain_words(small_config, model_dir, data_file, tmp_path):
    from circuit_atlas.training.metrics import TrainingQualityWarning, quality_warnings

    with pytest.warns(TrainingQualityWarning, match="the reconstruction is poor"):
        result = train_transcoders(model_dir, data_file, tmp_path / "tc", small_config(steps=2), progress=False)
    assert result.metrics["warnings"] == json.loads((tmp_path / "tc" / "metrics.json").read_text())["warnings"]
    # the shipped toy world CLT is good: no warning; the same figures made poor each get theirs
    shipped = Path(__file__).resolve().parents[2] / "circuit_atlas" / "zoo" / "toyworld" / "clt"
    metrics = json.loads((shipped / "metrics.json").read_text())
    cfg = TrainConfig.from_dict(load_transcoders(shipped).metadata["training"])
    assert quality_warnings(metrics, cfg) == []
    dead = quality_warnings({**metrics, "dead_fraction_mean": 0.87}, cfg)
    assert len(dead) == 1 and dead[0].startswith("87% of the features never fired") and "raise --k" in dead[0]
    (fvu,) = quality_warnings({**metrics, "fvu_mean": 0.35}, cfg)
    assert "FVU 0.350" in fvu and "--skip" not in fvu  # the set already has a skip connection
    (l0,) = quality_warnings({**metrics, "l0_mean": 24.0}, cfg)
    assert l0.startswith("L0 is 24.0 active features per token and layer where k = 16 was asked")
    plt = TrainConfig(target_l0=16)
    (l0,) = quality_warnings({**metrics, "l0_mean": 73.0}, plt)
    assert "where target_l0 = 16 was asked" in l0 and "--sparsity-coefficient" in l0
    assert quality_warnings({**metrics, "l0_mean": 73.0}, TrainConfig()) == []  # no L0 was asked for
