"""Resumable, incremental, and one clear error for each kind of bad input."""

import dataclasses
import os

import pytest
import torch
from features.dashboards.conftest import corpus
from safetensors.torch import load_file
from tiny import save_tiny

from circuit_atlas.cli import main
from circuit_atlas.features.dashboards import build_dashboards, load_dashboard, open_dashboards


def _state(out):
    return load_file(str(out / "state.safetensors"))


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def small(config):
    return dataclasses.replace(config, checkpoint_every=1)


def test_interrupted_build_resumes_to_the_same_result(tmp_path, data_file, plt_dir, small):
    out = tmp_path / "dash"
    stopped = build_dashboards("toyworld", "toyworld-plt", data_file, out, small, progress=False, stop_after_batches=2)
    assert stopped.path is None and not (out / "dashboards.sqlite").exists()
    assert (out / ".partial" / "rank0-of-1.safetensors").is_file()
    done = build_dashboards("toyworld", "toyworld-plt", data_file, out, small, progress=False)
    assert done.path == out and not (out / ".partial").exists()
    assert done.new_tokens == done.n_tokens == open_dashboards(plt_dir).info["n_tokens"]
    _assert_same_state(_state(out), _state(plt_dir))
    # finished: the same corpus again is not recomputed
    mtime = (out / "dashboards.sqlite").stat().st_mtime_ns
    again = build_dashboards("toyworld", "toyworld-plt", data_file, out, small, progress=False)
    assert again.skipped and (out / "dashboards.sqlite").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="count it twice"):
        build_dashboards("toyworld", "toyworld-plt", data_file, out, dataclasses.replace(small, tokens=100))


def test_adding_text_equals_building_on_all_of_it(tmp_path, small):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    docs_a, docs_b = corpus(7, 30), corpus(8, 30)
    a.write_text("\n".join(docs_a))
    b.write_text("\n".join(docs_b))
    both = tmp_path / "both.txt"
    both.write_text("\n".join(docs_a + docs_b))
    cfg = dataclasses.replace(small, checkpoint_every=0)
    build_dashboards("toyworld", "toyworld-plt", a, tmp_path / "inc", cfg, progress=False)
    before = (tmp_path / "inc" / "dashboards.sqlite").read_bytes()
    # an interrupted addition leaves the good dashboards as they were
    build_dashboards("toyworld", "toyworld-plt", b, tmp_path / "inc", small, progress=False, stop_after_batches=1)
    assert (tmp_path / "inc" / "dashboards.sqlite").read_bytes() == before
    added = build_dashboards("toyworld", "toyworld-plt", b, tmp_path / "inc", cfg, progress=False)
    full = build_dashboards("toyworld", "toyworld-plt", both, tmp_path / "full", cfg, progress=False)
    assert added.n_tokens == full.n_tokens and 0 < added.new_tokens < added.n_tokens
    _assert_same_state(_state(tmp_path / "inc"), _state(tmp_path / "full"))
    assert load_dashboard(tmp_path / "inc", 1, 3).to_json() == load_dashboard(tmp_path / "full", 1, 3).to_json()
    with pytest.raises(ValueError, match="other settings"):
        build_dashboards(
            "toyworld", "toyworld-plt", b, tmp_path / "inc", dataclasses.replace(cfg, top_k=3), progress=False
        )


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b"\n\n  \n", "is empty"), (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "not a text file"),
     (b"\xff\xfe bad", "not UTF-8"), (b"big", "fewer than one context window")],
)  # fmt: skip
def test_bad_data_is_one_clear_error(tmp_path, config, content, message, capsys):
    path = tmp_path / "data.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        build_dashboards("toyworld", "toyworld-plt", path, tmp_path / "out", config, progress=False)
    assert not (tmp_path / "out" / "dashboards.sqlite").exists()
    code = main(["features", "build", "--model", "toyworld", "--transcoders", "toyworld-plt", "--data", str(path),
                 "--out", str(tmp_path / "out"), "--no-progress"])  # fmt: skip
    assert code == 2 and message in capsys.readouterr().err


def test_transcoders_of_another_model(tmp_path, data_file, config):
    model = save_tiny(tmp_path / "tiny", "llama")
    with pytest.raises(ValueError, match="do not belong to the model"):
        build_dashboards(model, "toyworld-plt", data_file, tmp_path / "out", config, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dashboards("toyworld", "toyworld-plt", tmp_path / "missing.txt", tmp_path / "out", config)


def test_corrupt_dashboards_are_one_clear_error(tmp_path, plt_dir):
    out = tmp_path / "bad"
    out.mkdir()
    (out / "dashboards.sqlite").write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match="not a readable circuit-atlas dashboards file"):
        load_dashboard(out, 0, 0)
    (out / "dashboards.sqlite").write_bytes((plt_dir / "dashboards.sqlite").read_bytes())
    (out / "labels.json").write_text("{not json")
    with pytest.raises(ValueError, match="labels file"):
        load_dashboard(out, 0, 0)
