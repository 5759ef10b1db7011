"""Each kind of bad input gives one clear error."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from circuit_atlas.transcoders import (
    load_transcoders,
    random_transcoders,
    save_circuit_tracer_format,
    save_transcoders,
)

L, D, F = 3, 8, 16


def make(kind="plt", activation="jumprelu", skip=False):
    return random_transcoders(kind, L, D, F, activation=activation, k=4 if activation == "topk" else None, skip=skip)


def raises(exc, *fragments):
    """pytest.raises matching every fragment literally."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def edit_yaml(path, **changes):
    config = yaml.safe_load(path.read_text())
    config.update(changes)
    path.write_text(yaml.safe_dump(config))


# --- paths and detection -------------------------------------------------------------------
def test_missing_path_is_file_not_found(tmp_path):
    with raises(FileNotFoundError, "does not exist"):
        load_transcoders(tmp_path / "nope")
    with raises(FileNotFoundError, "Hugging Face Hub reference", "offline"):
        load_transcoders("mntss/clt-gemma-2-2b-426k")


def test_directory_matching_no_format_lists_the_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with raises(
        ValueError,
        "holds no transcoder set",
        "circuit_atlas_transcoders.json",
        "layer_{l}.safetensors",
        "W_enc_{l}.safetensors",
        "params.npz",
    ):
        load_transcoders(tmp_path)


def test_a_plain_file_is_not_a_set(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with raises(ValueError, "is a file; pass the directory"):
        load_transcoders(tmp_path / "weights.bin")


# --- our format ----------------------------------------------------------------------------
def test_newer_version_is_refused(tmp_path):
    path = save_transcoders(make(), tmp_path / "s")
    manifest = json.loads((path / "circuit_atlas_transcoders.json").read_text())
    manifest["version"] = 2
    (path / "circuit_atlas_transcoders.json").write_text(json.dumps(manifest))
    with raises(ValueError, "newer circuit-atlas (format version 2)", "upgrade circuit-atlas"):
        load_transcoders(path)


def test_wrong_format_name_and_missing_keys(tmp_path):
    path = save_transcoders(make(), tmp_path / "s")
    mpath = path / "circuit_atlas_transcoders.json"
    manifest = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**manifest, "format": "something-else"}))
    with raises(ValueError, "'format' is 'something-else'"):
        load_transcoders(path)
    mpath.write_text(json.dumps({k: v for k, v in manifest.items() if k != "widths"}))
    with raises(ValueError, "lacks the keys ['widths']"):
        load_transcoders(path)
    mpath.write_text("{not json")
    with raises(ValueError, "is not valid JSON"):
        load_transcoders(path)


def test_missing_layer_names_the_file_and_the_layers_found(tmp_path):
    path = save_transcoders(make(), tmp_path / "s")
    (path / "layer_1.safetensors").unlink()
    with raises(ValueError, "missing layer_1.safetensors", "layers found: [0, 2]"):
        load_transcoders(path)


def test_manifest_that_disagrees_with_the_files(tmp_path):
    path = save_transcoders(make(), tmp_path / "s")
    mpath = path / "circuit_atlas_transcoders.json"
    manifest = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**manifest, "widths": [16, 16, 17]}))
    with raises(ValueError, "declares widths [16, 16, 17]", "hold widths [16, 16, 16]"):
        load_transcoders(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors_names_the_file(tmp_path, damage):
    path = save_transcoders(make(), tmp_path / "s")
    file = path / "layer_2.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 10)
    with raises(ValueError, "layer_2.safetensors is not a readable safetensors file", "re-download or re-export it"):
        load_transcoders(path)


def test_unknown_hook_gives_the_class_error(tmp_path):
    path = save_circuit_tracer_format(make(), tmp_path / "ct")
    edit_yaml(path / "config.yaml", feature_input_hook="hook_resid_pre")
    with raises(ValueError, "unknown transcoder input hook 'hook_resid_pre'", "supported input hooks"):
        load_transcoders(path)
    # a caller's hook overrides the config's
    assert load_transcoders(path, input_hook="hook_resid_mid").input_hook == "hook_resid_mid"
    with raises(ValueError, "unknown transcoder output hook 'hook_attn_out'"):
        load_transcoders(path, input_hook="hook_resid_mid", output_hook="hook_attn_out")


# --- circuit-tracer formats ----------------------------------------------------------------
def test_circuit_tracer_missing_layer(tmp_path):
    path = save_circuit_tracer_format(make(), tmp_path / "ct")
    (path / "layer_1.safetensors").unlink()
    with raises(ValueError, "missing layer_1.safetensors", "layers found: [0, 2]"):
        load_transcoders(path)


def test_circuit_tracer_clt_missing_decoder(tmp_path):
    path = save_circuit_tracer_format(make("clt"), tmp_path / "ct")
    (path / "W_dec_1.safetensors").unlink()
    with raises(ValueError, "missing W_dec_1.safetensors", "layers found: [0, 2]"):
        load_transcoders(path)


def test_clt_with_unequal_widths_is_refused(tmp_path):
    path = save_circuit_tracer_format(make("clt", "relu"), tmp_path / "ct")
    save_file(
        {"W_enc_1": torch.randn(F + 1, D), "b_enc_1": torch.zeros(F + 1), "b_dec_1": torch.zeros(D)},
        path / "W_enc_1.safetensors",
    )
    save_file({"W_dec_1": torch.randn(F + 1, L - 1, D)}, path / "W_dec_1.safetensors")
    with raises(ValueError, "same width in every layer", "[16, 17]"):
        load_transcoders(path)


def test_log_thresholds_are_refused(tmp_path):
    path = save_circuit_tracer_format(make("plt", "relu"), tmp_path / "ct")
    t = load_file(path / "layer_0.safetensors")
    save_file({**t, "log_thresholds": torch.zeros(F)}, path / "layer_0.safetensors")
    with raises(ValueError, "layer_0.safetensors stores 'log_thresholds'", "activation_function.threshold"):
        load_transcoders(path)


def test_hub_reference_in_transcoders_list(tmp_path):
    path = save_circuit_tracer_format(make(), tmp_path / "ct")
    uri = "hf://google/gemma-scope-2b-pt-transcoders/layer_0/width_16k/average_l0_76/params.npz"
    edit_yaml(path / "config.yaml", transcoders=[uri])
    with raises(ValueError, uri, "Hugging Face Hub reference", "offline", "download the files"):
        load_transcoders(path)


def test_listed_file_that_does_not_exist(tmp_path):
    path = save_circuit_tracer_format(make(), tmp_path / "ct")
    edit_yaml(path / "config.yaml", transcoders=["layer_0.safetensors", "gone/layer_1.safetensors"])
    with raises(ValueError, "lists 'gone/layer_1.safetensors' for layer 1", "does not exist"):
        load_transcoders(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_kind": "sparse_autoencoder"}, "unknown model_kind 'sparse_autoencoder'"),
        ({"activation": "gelu"}, "unknown activation 'gelu'"),
        ({"activation": "topk"}, "a TopK transcoder set needs k"),
        ({"model_kind": "cross_layer_transcoder"}, "declares a cross_layer_transcoder"),
    ],
)
def test_bad_config_values(tmp_path, change, message):
    path = save_circuit_tracer_format(make("plt", "relu"), tmp_path / "ct")
    edit_yaml(path / "config.yaml", **change)
    with raises(ValueError, message):
        load_transcoders(path)


def test_invalid_yaml(tmp_path):
    path = save_circuit_tracer_format(make(), tmp_path / "ct")
    (path / "config.yaml").write_text("model_kind: [unclosed\n")
    with raises(ValueError, "config.yaml is not valid YAML"):
        load_transcoders(path)


def test_missing_tensor_and_mismatched_shapes(tmp_path):
    path = save_circuit_tracer_format(make("plt", "relu"), tmp_path / "ct")
    t = load_file(path / "layer_2.safetensors")
    save_file({k: v for k, v in t.items() if k != "b_dec"}, path / "layer_2.safetensors")
    with raises(ValueError, "layer_2.safetensors has no tensor 'b_dec'"):
        load_transcoders(path)
    save_file({**t, "W_enc": t["W_enc"].T.contiguous()}, path / "layer_2.safetensors")
    with raises(ValueError, "store both as (d_transcoder, d_model)"):
        load_transcoders(path)


def test_thresholds_in_only_some_layers(tmp_path):
    path = save_circuit_tracer_format(make("plt", "jumprelu"), tmp_path / "ct")
    t = load_file(path / "layer_1.safetensors")
    save_file({k: v for k, v in t.items() if k != "activation_function.threshold"}, path / "layer_1.safetensors")
    with raises(ValueError, "layers [0, 2] have thresholds but the others do not"):
        load_transcoders(path)


# --- GemmaScope ----------------------------------------------------------------------------
def write_npz(file, seed=0):
    g = torch.Generator().manual_seed(seed)
    file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        file,
        W_enc=torch.randn(D, F, generator=g).numpy(),
        W_dec=torch.randn(F, D, generator=g).numpy(),
        b_enc=np.zeros(F, np.float32),
        b_dec=np.zeros(D, np.float32),
        threshold=np.ones(F, np.float32),
    )


def test_gemmascope_missing_layer(tmp_path):
    write_npz(tmp_path / "layer_0" / "width_16k" / "average_l0_5" / "params.npz")
    write_npz(tmp_path / "layer_2" / "width_16k" / "average_l0_5" / "params.npz")
    with raises(ValueError, "missing layer_1.npz (or layer_1/**/params.npz)", "layers found: [0, 2]"):
        load_transcoders(tmp_path)


def test_gemmascope_several_files_for_a_layer(tmp_path):
    write_npz(tmp_path / "layer_0" / "width_16k" / "average_l0_5" / "params.npz")
    write_npz(tmp_path / "layer_0" / "width_16k" / "average_l0_50" / "params.npz")
    with raises(ValueError, "layer 0 has several parameter files", "config.yaml 'transcoders:' list"):
        load_transcoders(tmp_path)


def test_corrupt_npz_names_the_file(tmp_path):
    file = tmp_path / "layer_0.npz"
    write_npz(file)
    file.write_bytes(file.read_bytes()[:100])
    with raises(ValueError, "layer_0.npz is not a readable .npz file", "re-download or re-export it"):
        load_transcoders(tmp_path)


def test_gemmascope_wrong_orientation(tmp_path):
    file = tmp_path / "layer_0.npz"
    np.savez(
        file,
        W_enc=np.zeros((F, D), np.float32),
        W_dec=np.zeros((F, D), np.float32),
        b_enc=np.zeros(F, np.float32),
        b_dec=np.zeros(D, np.float32),
    )
    with raises(ValueError, "GemmaScope files store W_enc as (d_model, d_transcoder)"):
        load_transcoders(tmp_path)


# --- saving --------------------------------------------------------------------------------
def test_save_refuses_to_replace_unrelated_directories_and_files(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with raises(ValueError, "refusing to replace", "holds no transcoder set"):
        save_transcoders(make(), tmp_path / "docs")
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with raises(ValueError, "exists and is not a directory"):
        save_circuit_tracer_format(make(), tmp_path / "file")


def test_metadata_must_be_json(tmp_path):
    tc = make()
    tc.metadata = {"tensor": torch.zeros(1)}
    with raises(ValueError, "metadata must be JSON-serializable"):
        save_transcoders(tc, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_circuit_tracer_format_limits(tmp_path):
    with raises(ValueError, "never loads a skip matrix for a cross-layer transcoder"):
        save_circuit_tracer_format(make("clt", skip=True), tmp_path / "a")
    with raises(ValueError, "no TopK cross-layer transcoders"):
        save_circuit_tracer_format(make("clt", "topk"), tmp_path / "b")
    a, b = make(), random_transcoders("plt", L, D, 24)
    a.W_enc[1], a.b_enc[1], a.W_dec[1], a.threshold[1] = b.W_enc[1], b.b_enc[1], b.W_dec[1], b.threshold[1]
    with raises(ValueError, "same width in every layer", "[16, 24]"):
        save_circuit_tracer_format(a, tmp_path / "c")
    assert not any(tmp_path.iterdir())
