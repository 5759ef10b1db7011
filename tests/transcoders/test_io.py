"""Every supported format: save -> load round trips and hand-written foreign files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from circuit_atlas.transcoders import (
    Transcoders,
    detect_format,
    load_transcoders,
    random_transcoders,
    save_circuit_tracer_format,
    save_transcoders,
)
from circuit_atlas.transcoders import io as tio

L, D, F = 3, 8, 16


def make(kind="plt", activation="jumprelu", skip=False, seed=0, **kw) -> Transcoders:
    return random_transcoders(
        kind, L, D, F, activation=activation, k=4 if activation == "topk" else None, skip=skip, seed=seed, **kw
    )


# --- circuit-atlas format ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["plt", "clt"])
@pytest.mark.parametrize("activation, skip", [("relu", False), ("jumprelu", True), ("topk", False), ("topk", True)])
def test_circuit_atlas_round_trip(tmp_path, same, kind, activation, skip):
    tc = make(kind, activation, skip, input_hook="ln2.hook_normalized", output_hook="mlp.hook_out")
    tc.metadata = {"model": "toy", "nested": {"l0": [1, 2.5]}}
    out = save_transcoders(tc, tmp_path / "set")
    assert out == tmp_path / "set" and detect_format(out) == "circuit-atlas"
    same(load_transcoders(out), tc)


def test_circuit_atlas_per_layer_widths_and_bf16(tmp_path, same):
    a, b = make(seed=1), random_transcoders("plt", L, D, 24, seed=2)
    tc = Transcoders(
        kind="plt",
        W_enc=[a.W_enc[0], b.W_enc[1], a.W_enc[2]],
        b_enc=[a.b_enc[0], b.b_enc[1], a.b_enc[2]],
        W_dec=[a.W_dec[0], b.W_dec[1], a.W_dec[2]],
        b_dec=a.b_dec,
        activation="jumprelu",
        threshold=[a.threshold[0], b.threshold[1], a.threshold[2]],
    ).to(dtype=torch.bfloat16)
    save_transcoders(tc, tmp_path / "w")
    back = load_transcoders(tmp_path / "w")
    same(back, tc)
    assert [back.width(l) for l in range(L)] == [F, 24, F]
    manifest = (tmp_path / "w" / "circuit_atlas_transcoders.json").read_text()
    assert '"version": 1' in manifest and '"widths": [\n    16,\n    24,\n    16\n  ]' in manifest


def test_load_casts_moves_and_overrides_hooks(tmp_path):
    save_transcoders(make(skip=True), tmp_path / "s")
    tc = load_transcoders(
        tmp_path / "s", dtype=torch.float64, device="cpu", input_hook="blocks.0.mlp.hook_in", output_hook="mlp.hook_out"
    )
    assert all(t.dtype == torch.float64 for t in tc.W_enc + tc.threshold + tc.W_skip)
    assert (tc.input_hook, tc.output_hook) == ("mlp.hook_in", "mlp.hook_out")
    # the manifest (or config.yaml) itself is also accepted as the path
    assert load_transcoders(tmp_path / "s" / "circuit_atlas_transcoders.json").n_layers == L


def test_save_replaces_an_existing_set_atomically(tmp_path, same, monkeypatch):
    path = tmp_path / "set"
    old, new = make(seed=1), make(seed=2)
    save_transcoders(old, path)
    save_transcoders(new, path)
    same(load_transcoders(path), new)

    calls = {"n": 0}
    real = tio.save_file

    def failing(tensors, filename):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(tensors, filename)

    monkeypatch.setattr(tio, "save_file", failing)
    with pytest.raises(OSError, match="disk full"):
        save_transcoders(old, path)
    same(load_transcoders(path), new)  # the good set is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temp dirs left behind


def test_save_creates_parents_and_fills_an_empty_directory(tmp_path):
    save_transcoders(make(), tmp_path / "a" / "b" / "set")
    (tmp_path / "empty").mkdir()
    save_transcoders(make(), tmp_path / "empty")
    assert load_transcoders(tmp_path / "empty").n_layers == L
    assert oct(os.stat(tmp_path / "empty").st_mode & 0o777) == "0o755"


# --- circuit-tracer formats ----------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, activation, skip",
    [
        ("plt", "jumprelu", False),
        ("plt", "jumprelu", True),
        ("plt", "relu", True),
        ("plt", "topk", False),
        ("clt", "jumprelu", False),
        ("clt", "relu", False),
    ],
)
def test_circuit_tracer_round_trip(tmp_path, same, kind, activation, skip):
    tc = make(kind, activation, skip)
    path = save_circuit_tracer_format(tc, tmp_path / "local" / "toy", model_name="toy-llama")
    assert detect_format(path) == f"circuit-tracer-{kind}"
    back = load_transcoders(path)
    same(back, tc, metadata=False)
    assert back.name == tc.name and back.metadata["model_name"] == "toy-llama"
    assert back.metadata["source_format"] == f"circuit-tracer-{kind}"


def test_circuit_tracer_plt_files_use_native_names_and_shapes(tmp_path):
    tc = make("plt", "jumprelu", skip=True)
    path = save_circuit_tracer_format(tc, tmp_path / "ct")
    config = yaml.safe_load((path / "config.yaml").read_text())
    assert config["model_kind"] == "transcoder_set"
    assert (config["feature_input_hook"], config["feature_output_hook"]) == ("hook_resid_mid", "hook_mlp_out")
    assert "activation" not in config  # circuit-tracer infers JumpReLU from the thresholds
    t = load_file(path / "layer_1.safetensors")
    assert set(t) == {"W_enc", "W_dec", "b_enc", "b_dec", "activation_function.threshold", "W_skip"}
    assert t["W_enc"].shape == (F, D) and t["W_dec"].shape == (F, D)
    assert torch.equal(t["W_dec"], tc.W_dec[1][:, 0])


def test_circuit_tracer_clt_files_use_native_names_and_shapes(tmp_path):
    tc = make("clt", "jumprelu")
    path = save_circuit_tracer_format(tc, tmp_path / "ct")
    assert yaml.safe_load((path / "config.yaml").read_text())["model_kind"] == "cross_layer_transcoder"
    with safe_open(str(path / "W_enc_2.safetensors"), "pt") as f:
        assert set(f.keys()) == {"W_enc_2", "b_enc_2", "b_dec_2", "threshold_2"}
    assert load_file(path / "W_dec_0.safetensors")["W_dec_0"].shape == (F, L, D)


def test_circuit_tracer_clt_skip_extension_and_no_config(tmp_path):
    tc = make("clt", "relu")
    path = save_circuit_tracer_format(tc, tmp_path / "clt")
    (path / "config.yaml").unlink()  # config is optional for a CLT
    skips = [torch.randn(D, D) for _ in range(L)]
    for l in range(L):
        tensors = load_file(path / f"W_enc_{l}.safetensors")
        save_file({**tensors, f"W_skip_{l}": skips[l]}, path / f"W_enc_{l}.safetensors")
    back = load_transcoders(path)
    assert (back.kind, back.activation, back.input_hook, back.output_hook) == (
        "clt",
        "relu",
        "hook_resid_mid",
        "hook_mlp_out",
    )
    x = torch.randn(5, D)
    assert torch.equal(back.skip(2, x), x @ skips[2].T)


def write_plt_layers(path, tc, *, threshold=True, k=None, extra=None):
    path.mkdir(parents=True, exist_ok=True)
    for l in range(tc.n_layers):
        t = {"W_enc": tc.W_enc[l], "W_dec": tc.W_dec[l][:, 0].contiguous(), "b_enc": tc.b_enc[l], "b_dec": tc.b_dec[l]}
        if threshold:
            t["activation_function.threshold"] = tc.threshold[l]
        if k is not None:
            t["k"] = torch.tensor(k)
        save_file({**t, **(extra or {})}, path / f"layer_{l}.safetensors")


@pytest.mark.parametrize(
    "threshold, k, config_activation, expected",
    [
        (True, None, None, "jumprelu"),
        (False, None, None, "relu"),
        (False, 3, None, "topk"),
        (False, None, "topk", "topk"),
        (True, None, "jump_relu", "jumprelu"),
        (True, None, "relu", "relu"),
    ],
)
def test_circuit_tracer_plt_activation_inference(tmp_path, threshold, k, config_activation, expected):
    tc = make("plt", "jumprelu")
    write_plt_layers(tmp_path, tc, threshold=threshold, k=k)
    config = {
        "model_kind": "transcoder_set",
        "feature_input_hook": "hook_resid_mid",
        "feature_output_hook": "hook_mlp_out",
    }
    if config_activation:
        config["activation"] = config_activation
        config["k"] = 5
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    back = load_transcoders(tmp_path)
    assert back.activation == expected
    if expected == "topk":
        assert back.k == (5 if config_activation else 3)


def test_circuit_tracer_config_list_relative_absolute_and_v01_dicts(tmp_path):
    tc = make("plt", "jumprelu")
    write_plt_layers(tmp_path / "files", tc)
    entries = [
        "files/layer_0.safetensors",
        str(tmp_path / "files" / "layer_1.safetensors"),
        "files/layer_2.safetensors",
    ]
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model_kind": "transcoder_set",
                "feature_input_hook": "mlp.hook_in",
                "feature_output_hook": "mlp.hook_out",
                "transcoders": entries,
            }
        )
    )
    back = load_transcoders(tmp_path)
    assert (back.input_hook, back.output_hook) == ("mlp.hook_in", "mlp.hook_out")
    assert all(torch.equal(a, b) for a, b in zip(back.W_enc, tc.W_enc))
    dicts = [{"id": f"t{l}", "layer": l, "filepath": e} for l, e in reversed(list(enumerate(entries)))]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model_kind": "transcoder_set", "transcoders": dicts}))
    assert all(torch.equal(a, b) for a, b in zip(load_transcoders(tmp_path).W_dec, tc.W_dec))


# --- GemmaScope ----------------------------------------------------------------------------
def write_gemmascope(tc, directory, layout):
    for l in range(tc.n_layers):
        arrays = {
            "W_enc": tc.W_enc[l].T.numpy(),
            "W_dec": tc.W_dec[l][:, 0].numpy(),
            "b_enc": tc.b_enc[l].numpy(),
            "b_dec": tc.b_dec[l].numpy(),
            "threshold": tc.threshold[l].numpy(),
        }
        file = directory / (
            f"layer_{l}.npz" if layout == "flat" else f"layer_{l}/width_16k/average_l0_{7 + l}/params.npz"
        )
        file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(file, **arrays)


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_gemmascope_npz(tmp_path, same, layout):
    tc = make("plt", "jumprelu", input_hook="ln2.hook_normalized")
    write_gemmascope(tc, tmp_path, layout)
    assert detect_format(tmp_path) == "gemmascope"
    back = load_transcoders(tmp_path)
    same(back, tc, metadata=False)  # W_enc transposed back to (F, d); hooks default to GemmaScope's
    assert back.metadata["source_format"] == "gemmascope"


def test_gemmascope_npz_from_config_list(tmp_path, same):
    tc = make("plt", "jumprelu", input_hook="ln2.hook_normalized")
    write_gemmascope(tc, tmp_path / "dl", "nested")
    files = [str(p.relative_to(tmp_path)) for p in sorted((tmp_path / "dl").rglob("params.npz"))]
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"model_name": "google/gemma-2-2b", "model_kind": "transcoder_set", "transcoders": files})
    )
    back = load_transcoders(tmp_path)
    same(back, tc, metadata=False)
    assert back.metadata["model_name"] == "google/gemma-2-2b"


def test_gemmascope2_plt_with_affine_skip(tmp_path):
    tc = make("plt", "jumprelu")
    A = [torch.randn(D, D) for _ in range(L)]
    for l in range(L):
        file = tmp_path / f"layer_{l}" / "width_16k_l0_small" / "params.safetensors"
        file.parent.mkdir(parents=True)
        save_file(
            {
                "w_enc": tc.W_enc[l].T.contiguous(),
                "w_dec": tc.W_dec[l][:, 0].contiguous(),
                "b_enc": tc.b_enc[l],
                "b_dec": tc.b_dec[l],
                "threshold": tc.threshold[l],
                "affine_skip_connection": A[l],
            },
            file,
        )
    back = load_transcoders(tmp_path)
    assert back.metadata["source_format"] == "gemmascope-2" and back.input_hook == "ln2.hook_normalized"
    x = torch.randn(4, D)
    assert torch.equal(back.W_enc[1], tc.W_enc[1]) and torch.equal(back.threshold[2], tc.threshold[2])
    # GemmaScope-2 computes x @ affine_skip_connection; our x @ W_skip.T gives the same numbers
    assert torch.allclose(back.skip(1, x), x @ A[1])
    assert torch.equal(back.W_skip[1], A[1].T)


def test_gemmascope2_clt_from_config_list(tmp_path, same):
    tc = make("clt", "jumprelu")
    files = []
    for l in range(L):
        full = torch.zeros(F, L, D)
        full[:, l:] = tc.W_dec[l]  # GemmaScope-2 stores all L output layers per source layer
        np.savez(
            tmp_path / f"clt_{l}.npz",
            w_enc=tc.W_enc[l].T.numpy(),
            w_dec=full.numpy(),
            b_enc=tc.b_enc[l].numpy(),
            b_dec=tc.b_dec[l].numpy(),
            threshold=tc.threshold[l].numpy(),
        )
        files.append(f"clt_{l}.npz")
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model_kind": "cross_layer_transcoder",
                "feature_input_hook": "hook_resid_mid",
                "feature_output_hook": "hook_mlp_out",
                "transcoders": files,
            }
        )
    )
    assert detect_format(tmp_path) == "circuit-tracer-clt"
    same(load_transcoders(tmp_path), tc, metadata=False)
