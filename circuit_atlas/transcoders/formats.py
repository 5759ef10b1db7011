"""Readers for the transcoder file formats circuit-atlas understands.

Shapes: L layers, d = d_model, F_l = width of layer l. Every reader returns a `Transcoders`
(see transcoder.py), whose skip convention is skip(x) = x @ W_skip.T for PLTs and CLTs alike.

circuit-atlas (ours, versioned)
    <dir>/circuit_atlas_transcoders.json
        {"format": "circuit-atlas-transcoders", "version": 1, "kind": "plt"|"clt",
         "activation", "k", "input_hook", "output_hook", "n_layers", "d_model",
         "widths": [F_0, ...], "skip": bool, "name", "metadata": {...}}
    <dir>/layer_{l}.safetensors: W_enc (F_l, d), b_enc (F_l), W_dec (F_l, n_out, d) with
        n_out = 1 (PLT) or L - l (CLT), b_dec (d), optional threshold (F_l), optional W_skip (d, d).
    A manifest with a newer version than FORMAT_VERSION is refused.

circuit-tracer per-layer transcoders (config.yaml `model_kind: transcoder_set`)
    config.yaml: feature_input_hook, feature_output_hook, optional activation (relu | jumprelu |
    topk), optional k, optional `transcoders:` list (index = layer; local paths, relative to the
    directory or absolute). Without a list: <dir>/layer_{l}.safetensors.
    Layer files: W_enc (F, d), W_dec (F, d), b_enc (F), b_dec (d), optional
    activation_function.threshold (F), optional W_skip (d, d), optional k (scalar).
    With no `activation` key: thresholds => jumprelu, a k tensor => topk, else relu.

circuit-tracer cross-layer transcoder (`model_kind: cross_layer_transcoder`; config optional)
    W_enc_{l}.safetensors: W_enc_{l} (F, d), b_enc_{l} (F), b_dec_{l} (d), optional threshold_{l} (F)
    W_dec_{l}.safetensors: W_dec_{l} (F, L - l, d).  L = number of W_enc files.
    Hooks default to hook_resid_mid -> hook_mlp_out. circuit-tracer never reads a CLT skip from
    disk; as our extension a tensor W_skip_{l} (d, d) inside W_enc_{l}.safetensors is read with
    the PLT convention, skip(x) = x @ W_skip_{l}.T.

GemmaScope (.npz)
    params.npz: W_enc (d, F) (transposed on load), W_dec (F, d), b_enc (F), b_dec (d), threshold (F).
    Found as <dir>/layer_{l}.npz, as the single params.npz under <dir>/layer_{l}/ (any depth), or
    listed in a config.yaml `transcoders:` list. Hooks default to ln2.hook_normalized -> hook_mlp_out.

GemmaScope-2 (key names in lower case, in .npz or .safetensors, e.g. params.safetensors)
    w_enc (d, F) (transposed on load), w_dec (F, d) or, for a CLT, (F, L, d) or (F, L - l, d),
    b_enc, b_dec, threshold, optional affine_skip_connection (d, d). GemmaScope-2's reference code
    computes the skip as x @ affine_skip_connection (no transpose), so we store its transpose:
    W_skip = affine_skip_connection.T, and x @ W_skip.T is the same number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from .transcoder import Transcoders

MANIFEST = "circuit_atlas_transcoders.json"
FORMAT_NAME = "circuit-atlas-transcoders"
FORMAT_VERSION = 1
CONFIG = "config.yaml"

DEFAULT_HOOKS = ("hook_resid_mid", "hook_mlp_out")
GEMMASCOPE_HOOKS = ("ln2.hook_normalized", "hook_mlp_out")
ACTIVATION_ALIASES = {"relu": "relu", "jumprelu": "jumprelu", "jump_relu": "jumprelu", "topk": "topk"}

Layer = dict[str, Any]  # W_enc (F,d), b_enc (F), W_dec (F,n_out,d), b_dec (d), threshold, W_skip, k


# --- reading single files ------------------------------------------------------------------
def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor in a .safetensors or .npz file; ValueError if the file is unreadable."""
    if path.suffix == ".npz":
        return _read_npz(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}); re-download or re-export it") from err


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not a named set of arrays")
        with data:
            arrays = {key: np.array(data[key]) for key in data.files}
    except Exception as err:
        raise ValueError(f"{path} is not a readable .npz file ({err}); re-download or re-export it") from err
    return {key: torch.from_numpy(value) for key, value in arrays.items()}


def read_json(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-export the transcoder set") from err
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return manifest


def _take(tensors: dict[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    if key not in tensors:
        raise ValueError(f"{path} has no tensor {key!r} (it holds {sorted(tensors)})")
    return tensors[key]


# --- finding per-layer files ---------------------------------------------------------------
def numbered_files(directory: Path, pattern: str) -> dict[int, Path]:
    """{l: path} for files in `directory` whose name matches `pattern` with one (\\d+) group."""
    regex = re.compile(pattern)
    found = {}
    for path in directory.iterdir():
        match = regex.fullmatch(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def require_layers(found: dict[int, Path], directory: Path, template: str, n_layers: int | None = None) -> list[Path]:
    """Paths for layers 0..n-1 (n = n_layers or max found + 1); ValueError naming a missing one."""
    n = n_layers if n_layers is not None else (max(found) + 1 if found else 0)
    missing = [l for l in range(n) if l not in found]
    if n == 0 or missing:
        first = template.format(l=missing[0] if missing else 0)
        raise ValueError(
            f"{directory} is missing {first}: transcoder layers must run 0..{max(n - 1, 0)} without gaps "
            f"(layers found: {sorted(found)})"
        )
    return [found[l] for l in range(n)]


# --- converting one layer file -------------------------------------------------------------
def convert_layer_file(path: Path, layer: int, n_layers: int) -> Layer:
    """Read one per-layer file of any supported family into our layout (see module docstring)."""
    tensors = read_tensors(path)
    if "log_thresholds" in tensors:
        raise ValueError(
            f"{path} stores 'log_thresholds', which circuit-tracer and circuit-atlas do not read; "
            "re-export the file with 'activation_function.threshold' = exp(log_thresholds)"
        )
    if "w_enc" in tensors:
        return _from_gemmascope2(tensors, path, layer, n_layers)
    if path.suffix == ".npz":
        return _from_gemmascope(tensors, path)
    return _from_circuit_tracer(tensors, path)


def _flat_threshold(t: torch.Tensor | None, F: int, path: Path) -> torch.Tensor | None:
    if t is None:
        return None
    if t.numel() != F:
        raise ValueError(f"{path}: threshold has {t.numel()} entries but the layer has {F} features")
    return t.reshape(F)


def _from_circuit_tracer(tensors: dict[str, torch.Tensor], path: Path) -> Layer:
    W_enc, W_dec = _take(tensors, "W_enc", path), _take(tensors, "W_dec", path)
    if W_enc.ndim != 2 or W_dec.shape != W_enc.shape:
        raise ValueError(
            f"{path}: W_enc has shape {tuple(W_enc.shape)} and W_dec {tuple(W_dec.shape)}; circuit-tracer "
            "layer files store both as (d_transcoder, d_model)"
        )
    k = tensors.get("k")
    return {
        "W_enc": W_enc,  # (F, d)
        "b_enc": _take(tensors, "b_enc", path),
        "W_dec": W_dec.unsqueeze(1),  # (F, d) -> (F, 1, d)
        "b_dec": _take(tensors, "b_dec", path),
        "threshold": _flat_threshold(tensors.get("activation_function.threshold"), W_enc.shape[0], path),
        "W_skip": tensors.get("W_skip"),
        "k": None if k is None else int(k.reshape(-1)[0].item()),
        "family": "circuit-tracer",
    }


def _from_gemmascope(tensors: dict[str, torch.Tensor], path: Path) -> Layer:
    W_enc, W_dec = _take(tensors, "W_enc", path), _take(tensors, "W_dec", path)
    if W_enc.ndim != 2 or W_dec.shape != W_enc.T.shape:
        raise ValueError(
            f"{path}: W_enc has shape {tuple(W_enc.shape)} and W_dec {tuple(W_dec.shape)}; GemmaScope "
            "files store W_enc as (d_model, d_transcoder) and W_dec as (d_transcoder, d_model)"
        )
    return {
        "W_enc": W_enc.T.contiguous(),  # (d, F) -> (F, d)
        "b_enc": _take(tensors, "b_enc", path),
        "W_dec": W_dec.unsqueeze(1),
        "b_dec": _take(tensors, "b_dec", path),
        "threshold": _flat_threshold(tensors.get("threshold"), W_enc.shape[1], path),
        "W_skip": None,
        "k": None,
        "family": "gemmascope",
    }


def _from_gemmascope2(tensors: dict[str, torch.Tensor], path: Path, layer: int, n_layers: int) -> Layer:
    w_enc, w_dec = _take(tensors, "w_enc", path), _take(tensors, "w_dec", path)
    d, F = w_enc.shape
    clt_outputs = (n_layers, n_layers - layer)  # all L output layers, or only those >= l
    if w_dec.ndim == 2 and w_dec.shape == (F, d):
        W_dec = w_dec.unsqueeze(1)  # PLT: (F, d) -> (F, 1, d)
    elif w_dec.ndim == 3 and (w_dec.shape[0], w_dec.shape[2]) == (F, d) and w_dec.shape[1] in clt_outputs:
        W_dec = w_dec[:, layer:] if w_dec.shape[1] == n_layers else w_dec  # CLT: (F, L - l, d)
    else:
        raise ValueError(
            f"{path}: w_dec has shape {tuple(w_dec.shape)}; with w_enc {tuple(w_enc.shape)} GemmaScope-2 "
            f"expects ({F}, {d}) for a per-layer transcoder or ({F}, {n_layers}, {d}) for a cross-layer one"
        )
    skip = tensors.get("affine_skip_connection")
    return {
        "W_enc": w_enc.T.contiguous(),  # (d, F) -> (F, d)
        "b_enc": _take(tensors, "b_enc", path),
        "W_dec": W_dec.contiguous(),
        "b_dec": _take(tensors, "b_dec", path),
        "threshold": _flat_threshold(tensors.get("threshold"), F, path),
        "W_skip": None if skip is None else skip.T.contiguous(),  # x @ A == x @ (A.T).T
        "k": None,
        "clt": w_dec.ndim == 3,
        "family": "gemmascope-2",
    }


# --- assembling a set ----------------------------------------------------------------------
def assemble(
    layers: list[Layer],
    *,
    kind: str,
    activation: str | None,
    k: int | None,
    hooks: tuple[str, str],
    name: str,
    metadata: dict,
    source: Path,
) -> Transcoders:
    """Check per-layer consistency and build the Transcoders (dtype/device are left as stored)."""
    for key, what in (("threshold", "thresholds"), ("W_skip", "a skip matrix")):
        have = [l for l, layer in enumerate(layers) if layer.get(key) is not None]
        if have and len(have) != len(layers):
            raise ValueError(f"{source}: layers {have} have {what} but the others do not; every layer must agree")
    if activation is None:
        if layers[0].get("threshold") is not None:
            activation = "jumprelu"
        elif layers[0].get("k") is not None:
            activation = "topk"
        else:
            activation = "relu"
    if str(activation).lower() not in ACTIVATION_ALIASES:
        raise ValueError(f"{source}: unknown activation {activation!r}; expected relu, jumprelu or topk")
    activation = ACTIVATION_ALIASES[str(activation).lower()]
    if k is None and activation == "topk":
        ks = {layer["k"] for layer in layers if layer.get("k") is not None}
        if len(ks) > 1:
            raise ValueError(f"{source}: layers store different k values {sorted(ks)}; set k in config.yaml")
        k = ks.pop() if ks else None
        if k is None:
            raise ValueError(f"{source}: a TopK transcoder set needs k (in config.yaml or as a 'k' tensor)")
    if kind == "clt":
        widths = sorted({layer["W_enc"].shape[0] for layer in layers})
        if len(widths) > 1:
            raise ValueError(f"{source}: a cross-layer transcoder needs the same width in every layer, got {widths}")
    dtype = layers[0]["W_enc"].dtype

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() else t

    def column(key: str) -> list[torch.Tensor] | None:
        if layers[0].get(key) is None:
            return None
        return [cast(layer[key]) for layer in layers]

    return Transcoders(
        kind=kind,
        W_enc=column("W_enc"),
        b_enc=column("b_enc"),
        W_dec=column("W_dec"),
        b_dec=column("b_dec"),
        activation=activation,
        threshold=column("threshold"),
        k=None if k is None else int(k),
        W_skip=column("W_skip"),
        input_hook=hooks[0],
        output_hook=hooks[1],
        name=name,
        metadata=metadata,
    )


Hooks = tuple[str | None, str | None]  # (input hook, output hook); None = not given


def _hooks(found: Hooks, default: tuple[str, str], overrides: Hooks) -> tuple[str, str]:
    """Caller's hooks first, then the file's, then the format's defaults."""
    return overrides[0] or found[0] or default[0], overrides[1] or found[1] or default[1]


def _config_hooks(config: dict) -> Hooks:
    return config.get("feature_input_hook"), config.get("feature_output_hook")


def _foreign_info(directory: Path, config: dict, source_format: str) -> tuple[str, dict]:
    name = config.get("scan") or config.get("scan_name") or directory.name
    metadata: dict = {"source_format": source_format, "source_path": str(directory)}
    if config.get("model_name"):
        metadata["model_name"] = config["model_name"]
    return str(name), metadata


# --- whole-set readers ---------------------------------------------------------------------
def read_circuit_atlas(directory: Path, overrides: Hooks = (None, None)) -> Transcoders:
    path = directory / MANIFEST
    manifest = read_json(path)
    if manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: 'format' is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    version = manifest.get("version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: 'version' must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer circuit-atlas (format version {version}); this version reads "
            f"format version {FORMAT_VERSION} and older: upgrade circuit-atlas to load it"
        )
    required = ("kind", "activation", "n_layers", "d_model", "widths", "skip")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}; re-export the transcoder set")
    n_layers = int(manifest["n_layers"])
    found = numbered_files(directory, r"layer_(\d+)\.safetensors")
    files = require_layers(found, directory, "layer_{l}.safetensors", n_layers)
    layers = []
    for _l, file in enumerate(files):
        tensors = read_tensors(file)
        layer = {key: _take(tensors, key, file) for key in ("W_enc", "b_enc", "W_dec", "b_dec")}
        layer["threshold"], layer["W_skip"] = tensors.get("threshold"), tensors.get("W_skip")
        if bool(manifest["skip"]) != (layer["W_skip"] is not None):
            state = "absent" if manifest["skip"] else "present"
            raise ValueError(f"{file}: the manifest says skip={manifest['skip']} but W_skip is {state}")
        layers.append(layer)
    widths = [layer["W_enc"].shape[0] for layer in layers]
    d_model = layers[0]["W_enc"].shape[1]
    if widths != list(manifest["widths"]) or d_model != manifest["d_model"]:
        raise ValueError(
            f"{path} declares widths {manifest['widths']} and d_model {manifest['d_model']} but the layer files "
            f"hold widths {widths} and d_model {d_model}; re-export the transcoder set"
        )
    hooks = _hooks((manifest.get("input_hook"), manifest.get("output_hook")), DEFAULT_HOOKS, overrides)
    return assemble(
        layers,
        kind=manifest["kind"],
        activation=manifest["activation"],
        k=manifest.get("k"),
        hooks=hooks,
        name=str(manifest.get("name", directory.name)),
        metadata=dict(manifest.get("metadata") or {}),
        source=directory,
    )


def read_layer_set(
    directory: Path, config: dict, files: list[Path], overrides: Hooks = (None, None), expect_clt: bool = False
) -> Transcoders:
    """A set given as one file per layer (circuit-tracer PLT, GemmaScope, GemmaScope-2, lists)."""
    layers = [convert_layer_file(file, l, len(files)) for l, file in enumerate(files)]
    gemmascope = layers[0]["family"] != "circuit-tracer"
    kind = "clt" if layers[0].get("clt") else "plt"
    if any(bool(layer.get("clt")) != (kind == "clt") for layer in layers):
        raise ValueError(f"{directory}: some layer files are cross-layer (3-D w_dec) and some are not")
    if expect_clt and kind != "clt":
        raise ValueError(
            f"{directory / 'config.yaml'} declares a cross_layer_transcoder but its listed files are per-layer "
            "transcoders (2-D decoders); set model_kind: transcoder_set"
        )
    family = layers[0]["family"]
    source_format = "circuit-tracer-plt" if family == "circuit-tracer" else family
    name, metadata = _foreign_info(directory, config, source_format)
    hooks = _hooks(_config_hooks(config), GEMMASCOPE_HOOKS if gemmascope else DEFAULT_HOOKS, overrides)
    return assemble(
        layers,
        kind=kind,
        activation=config.get("activation"),
        k=config.get("k"),
        hooks=hooks,
        name=name,
        metadata=metadata,
        source=directory,
    )


def read_circuit_tracer_clt(directory: Path, config: dict, overrides: Hooks = (None, None)) -> Transcoders:
    enc = require_layers(numbered_files(directory, r"W_enc_(\d+)\.safetensors"), directory, "W_enc_{l}.safetensors")
    L = len(enc)
    dec = require_layers(numbered_files(directory, r"W_dec_(\d+)\.safetensors"), directory, "W_dec_{l}.safetensors", L)
    layers = []
    for l in range(L):
        tensors = read_tensors(enc[l])
        W_enc = _take(tensors, f"W_enc_{l}", enc[l])  # (F, d)
        layers.append(
            {
                "W_enc": W_enc,
                "b_enc": _take(tensors, f"b_enc_{l}", enc[l]),
                "b_dec": _take(tensors, f"b_dec_{l}", enc[l]),
                "threshold": _flat_threshold(tensors.get(f"threshold_{l}"), W_enc.shape[0], enc[l]),
                "W_skip": tensors.get(f"W_skip_{l}"),  # our extension, x @ W_skip.T
                "W_dec": _take(read_tensors(dec[l]), f"W_dec_{l}", dec[l]),  # (F, L - l, d)
            }
        )
    name, metadata = _foreign_info(directory, config, "circuit-tracer-clt")
    return assemble(
        layers,
        kind="clt",
        activation=config.get("activation"),
        k=config.get("k"),
        hooks=_hooks(_config_hooks(config), DEFAULT_HOOKS, overrides),
        name=name,
        metadata=metadata,
        source=directory,
    )
