"""Save and load a Graph as one `.safetensors` file (no pickle, so loading never runs code).

Layout: tensors input_ids, kind, layer, position, feature, activation, edges, row_nodes (and
influence when set); the safetensors header's `__metadata__` holds one JSON string under the key
"circuit_atlas_graph":

    {"format": "circuit-atlas-graph", "version": 1, "prompt", "tokens", "n_layers",
     "logit_labels", "metadata"}

Writes go to a temporary file in the target directory and are moved into place with
`os.replace`, so a failed save never leaves a half-written graph where a good one was.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .graph import Graph

FORMAT = "circuit-atlas-graph"
VERSION = 1
HEADER_KEY = "circuit_atlas_graph"

# tensor name -> dtype on disk and in memory
_TENSORS = {
    "input_ids": torch.int64,
    "kind": torch.int8,
    "layer": torch.int64,
    "position": torch.int64,
    "feature": torch.int64,
    "activation": torch.float32,
    "edges": torch.float32,
    "row_nodes": torch.int64,
}


def _header(graph: Graph) -> str:
    header = {
        "format": FORMAT,
        "version": VERSION,
        "prompt": graph.prompt,
        "tokens": list(graph.tokens),
        "n_layers": int(graph.n_layers),
        "logit_labels": list(graph.logit_labels),
        "metadata": graph.metadata,
    }
    try:
        return json.dumps(header, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"graph.metadata must be JSON-serializable to be saved: {exc}") from None


def save_graph(graph: Graph, path: str | os.PathLike) -> None:
    """Write `graph` to `path` (one .safetensors file), atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save graph to {path}: directory {path.parent} does not exist")
    tensors = {name: getattr(graph, name).detach().to(dtype).contiguous() for name, dtype in _TENSORS.items()}
    if graph.influence is not None:
        tensors["influence"] = graph.influence.detach().to(torch.float32).contiguous()
    storages: set[int] = set()
    for name, tensor in tensors.items():  # safetensors refuses tensors that share memory: copy repeats
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in storages and tensor.numel():
            tensors[name] = tensor.clone()
        storages.add(ptr)
    metadata = {HEADER_KEY: _header(graph)}

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode it replaces (or an ordinary 0644)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _read_header(path: Path, raw: dict[str, str] | None) -> dict[str, Any]:
    if not raw or HEADER_KEY not in raw:
        raise ValueError(
            f"{path} is a safetensors file but not a circuit-atlas graph (no {HEADER_KEY!r} entry in its metadata)"
        )
    try:
        header = json.loads(raw[HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} has a corrupt circuit-atlas graph header (invalid JSON: {exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a circuit-atlas graph (header format is not {FORMAT!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path} has an invalid graph format version {version!r}")
    if version > VERSION:
        raise ValueError(
            f"{path} uses graph format version {version}, newer than this circuit-atlas reads "
            f"(up to {VERSION}); upgrade circuit-atlas to load it"
        )
    missing = [k for k in ("prompt", "tokens", "n_layers", "logit_labels", "metadata") if k not in header]
    if missing:
        raise ValueError(f"{path} has a corrupt circuit-atlas graph header (missing {', '.join(missing)})")
    return header


def load_graph(path: str | os.PathLike) -> Graph:
    """Read a Graph written by `save_graph`. Raises FileNotFoundError or ValueError naming `path`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no graph file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = _read_header(path, f.metadata())
            names = set(f.keys())
            missing = [name for name in _TENSORS if name not in names]
            if missing:
                raise ValueError(f"{path} is a corrupt circuit-atlas graph (missing tensors: {', '.join(missing)})")
            tensors = {name: f.get_tensor(name).to(dtype) for name, dtype in _TENSORS.items()}
            influence = f.get_tensor("influence").to(torch.float32) if "influence" in names else None
    except ValueError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated / garbage files
        raise ValueError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    try:
        return Graph(
            prompt=header["prompt"],
            tokens=list(header["tokens"]),
            n_layers=int(header["n_layers"]),
            logit_labels=list(header["logit_labels"]),
            metadata=header["metadata"],
            influence=influence,
            **tensors,
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is a corrupt circuit-atlas graph: {exc}") from None
