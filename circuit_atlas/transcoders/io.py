"""Load and save transcoder sets.

`load_transcoders(path)` reads every format described in formats.py (ours, circuit-tracer PLT and
CLT, GemmaScope .npz, GemmaScope-2). A directory is recognised in this order:

1. circuit_atlas_transcoders.json                       -> circuit-atlas
2. config.yaml with a `transcoders:` list               -> the listed local files, read by content
3. W_enc_{l}.safetensors (unless config says transcoder_set) -> circuit-tracer CLT
4. layer_{l}.safetensors                                -> circuit-tracer PLT
5. layer_{l}.npz or layer_{l}/**/params.{npz,safetensors} -> GemmaScope / GemmaScope-2

circuit-atlas never downloads: a Hugging Face reference (hf://..., owner/repo) must be fetched by
the user first and the local directory passed in.

`save_transcoders(tc, path)` writes our format; `save_circuit_tracer_format(tc, path)` writes
circuit-tracer's native layout, so the benchmark can feed circuit-tracer the same weights (its
cache loader finds the files by name: point CIRCUIT_TRACER_CACHE_DIR at the parent of `local/<name>`).
Both write atomically: everything goes into a temporary directory beside `path`, which is renamed
into place only when complete; a set already at `path` is swapped out, never half overwritten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from .formats import (
    CONFIG,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    numbered_files,
    read_circuit_atlas,
    read_circuit_tracer_clt,
    read_layer_set,
    require_layers,
)
from .transcoder import Transcoders

FORMATS = {
    "circuit-atlas": f"{MANIFEST} + layer_{{l}}.safetensors",
    "circuit-tracer-plt": f"{CONFIG} (model_kind: transcoder_set) + layer_{{l}}.safetensors, or a 'transcoders:' list",
    "circuit-tracer-clt": "W_enc_{l}.safetensors + W_dec_{l}.safetensors (config.yaml optional)",
    "gemmascope": "layer_{l}.npz or layer_{l}/**/params.npz (GemmaScope; GemmaScope-2 key names too)",
}


# --- loading -------------------------------------------------------------------------------
def load_transcoders(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    input_hook: str | None = None,
    output_hook: str | None = None,
) -> Transcoders:
    """Read a transcoder set from a local directory, detecting its format.

    dtype/device: cast/move every floating tensor (None keeps the stored dtype of W_enc, on CPU).
    input_hook/output_hook: override the hooks stored in the files (TransformerLens names).
    Raises FileNotFoundError for a missing path and ValueError for anything unreadable.
    """
    directory = _directory(path)
    fmt, config, files = _classify(directory)
    overrides = (input_hook, output_hook)
    if fmt == "circuit-atlas":
        tc = read_circuit_atlas(directory, overrides)
    elif fmt == "circuit-tracer-clt" and files is None:
        tc = read_circuit_tracer_clt(directory, config, overrides)
    else:
        assert files is not None
        tc = read_layer_set(directory, config, files, overrides, expect_clt=fmt == "circuit-tracer-clt")
    metrics = directory / "metrics.json"  # written by training beside the weights: the numerical match check reads it
    if "metrics" not in tc.metadata and metrics.is_file():
        try:
            tc.metadata["metrics"] = json.loads(metrics.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{metrics} is not valid JSON ({err}); delete or repair it") from err
    if dtype is not None or device is not None:
        tc.to(device=device, dtype=dtype)
    return tc


def detect_format(path: str | os.PathLike) -> str:
    """The layout of a transcoder directory: one of the keys of FORMATS."""
    return _classify(_directory(path))[0]


def _directory(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        hint = ""
        if str(path).startswith("hf://") or re.fullmatch(r"[\w.-]+/[\w.-]+(/.*)?", str(path)):
            hint = (
                "; if this is a Hugging Face Hub reference: circuit-atlas works offline, so download "
                "the transcoder files and pass the local directory"
            )
        raise FileNotFoundError(f"transcoder path {str(path)!r} does not exist{hint}")
    if p.is_file():
        if p.name in (MANIFEST, CONFIG):
            return p.parent
        raise ValueError(f"{p} is a file; pass the directory that holds the transcoder set")
    return p


def _classify(directory: Path) -> tuple[str, dict, list[Path] | None]:
    """(format, config.yaml contents or {}, per-layer files where the format has them)."""
    if (directory / MANIFEST).is_file():
        return "circuit-atlas", {}, None
    config = _read_yaml(directory / CONFIG) if (directory / CONFIG).is_file() else {}
    kind = config.get("model_kind")
    if kind not in (None, "transcoder_set", "cross_layer_transcoder"):
        raise ValueError(
            f"{directory / CONFIG}: unknown model_kind {kind!r}; expected transcoder_set or cross_layer_transcoder"
        )
    clt_name = "circuit-tracer-clt"
    if "transcoders" in config:
        files = resolve_listed_paths(directory, config["transcoders"])
        return (clt_name if kind == "cross_layer_transcoder" else "circuit-tracer-plt"), config, files
    if kind != "transcoder_set" and numbered_files(directory, r"W_enc_(\d+)\.safetensors"):
        return clt_name, config, None
    if kind == "cross_layer_transcoder":
        raise ValueError(
            f"{directory / CONFIG} declares a cross_layer_transcoder, but {directory} holds no "
            "W_enc_{l}.safetensors files and the config has no 'transcoders:' list"
        )
    plt_files = numbered_files(directory, r"layer_(\d+)\.safetensors")
    if plt_files:
        return "circuit-tracer-plt", config, require_layers(plt_files, directory, "layer_{l}.safetensors")
    gemmascope = find_gemmascope_files(directory)
    if gemmascope:
        return "gemmascope", config, require_layers(gemmascope, directory, "layer_{l}.npz (or layer_{l}/**/params.npz)")
    looked_for = "; ".join(f"{name}: {layout}" for name, layout in FORMATS.items())
    raise ValueError(f"{directory} holds no transcoder set circuit-atlas can read. Looked for {looked_for}")


def _read_yaml(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid YAML ({err})") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a YAML mapping (keys such as model_kind), got {type(config).__name__}")
    return config


def find_gemmascope_files(directory: Path) -> dict[int, Path]:
    """GemmaScope layer files: layer_{l}.npz, or the one params.{npz,safetensors} under layer_{l}/."""
    found = numbered_files(directory, r"layer_(\d+)\.npz")
    for sub in sorted(directory.iterdir()):
        match = re.fullmatch(r"layer_(\d+)", sub.name)
        if not (match and sub.is_dir()):
            continue
        layer = int(match.group(1))
        params = sorted(sub.rglob("params.npz")) + sorted(sub.rglob("params.safetensors"))
        params += [found[layer]] if layer in found else []
        if len(params) > 1:
            shown = ", ".join(str(p.relative_to(directory)) for p in params[:4]) + (", ..." if len(params) > 4 else "")
            raise ValueError(
                f"{directory}: layer {layer} has several parameter files ({shown}); "
                "keep one per layer or list the files to use in a config.yaml 'transcoders:' list"
            )
        if params:
            found[layer] = params[0]
    return found


def resolve_listed_paths(directory: Path, entries: Any) -> list[Path]:
    """Local files of a config.yaml `transcoders:` list (index = layer, or v0.1 dicts with `layer`)."""
    config_path = directory / CONFIG
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{config_path}: 'transcoders' must be a non-empty list of per-layer file paths")
    by_layer: dict[int, str] = {}
    for index, entry in enumerate(entries):
        if isinstance(entry, dict) and "filepath" in entry:
            by_layer[int(entry.get("layer", index))] = str(entry["filepath"])
        elif isinstance(entry, str):
            by_layer[index] = entry
        else:
            raise ValueError(f"{config_path}: transcoders[{index}] must be a file path, got {entry!r}")
    paths = {}
    for layer, entry in by_layer.items():
        if entry.startswith("hf:"):
            raise ValueError(
                f"{config_path} lists {entry!r} for layer {layer}, a Hugging Face Hub reference. circuit-atlas "
                "works offline: download the files, then list their local paths (or point load_transcoders "
                "at a local directory)"
            )
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else directory / path
        if not path.is_file():
            raise ValueError(
                f"{config_path} lists {entry!r} for layer {layer}, but {path} does not exist (relative paths "
                "are read from the config's directory; circuit-atlas never downloads)"
            )
        paths[layer] = path
    return require_layers(paths, directory, "the config.yaml 'transcoders:' entry for layer {l}")


# --- saving --------------------------------------------------------------------------------
def save_transcoders(tc: Transcoders, path: str | os.PathLike) -> Path:
    """Write `tc` in the circuit-atlas format (version FORMAT_VERSION), atomically. Returns the path."""
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "kind": tc.kind,
        "activation": tc.activation,
        "k": tc.k,
        "input_hook": tc.input_hook,
        "output_hook": tc.output_hook,
        "n_layers": tc.n_layers,
        "d_model": tc.d_model,
        "widths": [tc.width(l) for l in range(tc.n_layers)],
        "skip": tc.has_skip,
        "name": tc.name,
        "metadata": tc.metadata,
    }
    try:
        text = json.dumps(manifest, indent=2)
    except (TypeError, ValueError) as err:
        raise ValueError(f"transcoder metadata must be JSON-serializable to be saved ({err})") from err

    def write(tmp: Path) -> None:
        for l in range(tc.n_layers):
            tensors = {"W_enc": tc.W_enc[l], "b_enc": tc.b_enc[l], "W_dec": tc.W_dec[l], "b_dec": tc.b_dec[l]}
            if tc.threshold is not None:
                tensors["threshold"] = tc.threshold[l]
            if tc.W_skip is not None:
                tensors["W_skip"] = tc.W_skip[l]
            _save_tensors(tensors, tmp / f"layer_{l}.safetensors")
        _write_text(tmp / MANIFEST, text + "\n")

    return _write_atomically(Path(path), write)


def save_circuit_tracer_format(tc: Transcoders, path: str | os.PathLike, *, model_name: str | None = None) -> Path:
    """Write `tc` in circuit-tracer's native layout (see formats.py), atomically. Returns the path.

    PLT: config.yaml (model_kind: transcoder_set) + layer_{l}.safetensors with W_enc/W_dec (F, d),
    `activation_function.threshold` for JumpReLU, W_skip, and `k` for TopK. CLT: W_enc_{l} / W_dec_{l}
    files + config.yaml (model_kind: cross_layer_transcoder). circuit-tracer needs one width for all
    layers, and has no CLT skip or CLT TopK: those raise ValueError rather than change the model.
    TopK PLTs need upstream circuit-tracer; 0.5.0 rejects the `k` tensor instead of running ReLU.
    `model_name` (default: tc.metadata["model_name"]) goes into config.yaml for circuit-tracer's CLI.
    """
    widths = sorted({tc.width(l) for l in range(tc.n_layers)})
    if len(widths) > 1:
        raise ValueError(f"circuit-tracer needs the same width in every layer; this set has widths {widths}")
    if tc.kind == "clt" and tc.has_skip:
        raise ValueError(
            "circuit-tracer never loads a skip matrix for a cross-layer transcoder, so it would run a different "
            "model; save this set with save_transcoders instead"
        )
    if tc.kind == "clt" and tc.activation == "topk":
        raise ValueError("circuit-tracer has no TopK cross-layer transcoders; save this set with save_transcoders")
    config: dict[str, Any] = {
        "model_kind": "transcoder_set" if tc.kind == "plt" else "cross_layer_transcoder",
        "feature_input_hook": tc.input_hook,
        "feature_output_hook": tc.output_hook,
        "scan": tc.name,
    }
    model_name = model_name or tc.metadata.get("model_name")
    if model_name:
        config["model_name"] = str(model_name)
    if tc.activation == "topk":
        config["activation"], config["k"] = "topk", int(tc.k)
    jump = tc.activation == "jumprelu"  # a stored threshold alone would turn circuit-tracer's ReLU into JumpReLU

    def write(tmp: Path) -> None:
        for l in range(tc.n_layers):
            if tc.kind == "plt":
                tensors = {"W_enc": tc.W_enc[l], "W_dec": tc.W_dec[l][:, 0], "b_enc": tc.b_enc[l], "b_dec": tc.b_dec[l]}
                if jump:
                    tensors["activation_function.threshold"] = tc.threshold[l]
                if tc.W_skip is not None:
                    tensors["W_skip"] = tc.W_skip[l]
                if tc.activation == "topk":
                    tensors["k"] = torch.tensor(int(tc.k), dtype=torch.int64)
                _save_tensors(tensors, tmp / f"layer_{l}.safetensors")
            else:
                tensors = {f"W_enc_{l}": tc.W_enc[l], f"b_enc_{l}": tc.b_enc[l], f"b_dec_{l}": tc.b_dec[l]}
                if jump:
                    tensors[f"threshold_{l}"] = tc.threshold[l]
                _save_tensors(tensors, tmp / f"W_enc_{l}.safetensors")
                _save_tensors({f"W_dec_{l}": tc.W_dec[l]}, tmp / f"W_dec_{l}.safetensors")
        _write_text(tmp / CONFIG, yaml.safe_dump(config, sort_keys=False))  # last: circuit-tracer's completeness marker

    return _write_atomically(Path(path), write)


def ordinary_mode(directory: bool = False) -> int:
    """The mode open() / mkdir() give a new file / directory under the umask (safetensors' save_file
    and tempfile.mkdtemp create theirs 0600 / 0700, private whatever the umask says)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    # Own, contiguous CPU copies: safetensors refuses tensors that share memory.
    save_file({key: t.detach().to("cpu", copy=True).contiguous() for key, t in tensors.items()}, str(path))
    os.chmod(path, ordinary_mode())
    _fsync(path)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)
    _fsync(path)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def swap_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished directory `tmp` to `path`; an old `path` is removed only afterwards
    (and restored if the rename fails), so a good set is never lost to a failed write."""
    if path.exists():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Run write(tmp) on a fresh directory beside `path`, then rename it to `path`.

    An existing transcoder set at `path` is renamed away first and deleted only after the new one is
    in place (restored if the rename fails). A non-empty directory that holds no transcoder set is
    never replaced.
    """
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"cannot save transcoders to {path}: it exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not ((path / MANIFEST).exists() or (path / CONFIG).exists()):
        raise ValueError(
            f"refusing to replace {path}: the directory is not empty and holds no transcoder set "
            f"(no {MANIFEST} or {CONFIG}); choose another path or empty it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.writing-", dir=path.parent))
    try:
        write(tmp)
        os.chmod(tmp, ordinary_mode(directory=True))
        swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
