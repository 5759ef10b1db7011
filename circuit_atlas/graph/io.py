"""Save and load a Graph as one `.safetensors` file (no pickle, so loading never runs code).

Layout (version 2): tensors input_ids, kind, layer, position, feature, activation, row_nodes,
edge_indptr, edge_sources, edge_values (the CSR edges, see graph.py) and influence when set.
The safetensors header's `__metadata__` holds two strings:

    "circuit_atlas_graph":  {"format": "circuit-atlas-graph", "version": 2, "prompt", "tokens",
                             "n_layers", "logit_labels", "metadata"}      (JSON)
    "circuit_atlas_sha256": sha256 hex digest of that exact string, then of every tensor in
                            name order (name, dtype, shape, raw little-endian bytes)

Loading recomputes the digest before reading anything else, so a flipped bit anywhere in the
tensors or the graph header is one "corrupt" ValueError naming the file. Version 1 files
(dense `edges` (n_rows, n_sources), no checksum) still load: their edges are converted to CSR.

Writes go to a temporary file in the target directory and are moved into place with
`os.replace`, so a failed save never leaves a half-written graph where a good one was.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .graph import Graph

FORMAT = "circuit-atlas-graph"
VERSION = 2
HEADER_KEY = "circuit_atlas_graph"
CHECKSUM_KEY = "circuit_atlas_sha256"

# tensor name -> dtype on disk and in memory
_NODE_TENSORS = {
    "input_ids": torch.int64,
    "kind": torch.int8,
    "layer": torch.int64,
    "position": torch.int64,
    "feature": torch.int64,
    "activation": torch.float32,
    "row_nodes": torch.int64,
}
_TENSORS = _NODE_TENSORS | {"edge_indptr": torch.int64, "edge_sources": torch.int32, "edge_values": torch.float32}
_TENSORS_V1 = _NODE_TENSORS | {"edges": torch.float32}


def checksum(header: str, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the header string and every tensor (sorted by name: name, dtype, shape, bytes)."""
    h = hashlib.sha256(header.encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0".encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy())  # raw bytes, no copy
    return h.hexdigest()


def _sort_metadata_in_place(path: str) -> None:
    """Rewrite the safetensors header with `__metadata__` keys in sorted order.

    safetensors keeps metadata in a hash map, so with two keys the byte order of a saved file
    changes from run to run; the graph server content-addresses files, and rebuilds compare
    sha256s, so the same graph must give the same bytes. The header may be padded with spaces
    (the format allows it), so the rewrite happens in place without moving the tensor data."""
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > n:  # escaping differed from the writer's; keep its (valid) header
            return
        f.seek(8)
        f.write(text + b" " * (n - len(text)))


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
    tensors = {name: getattr(graph, name).detach().cpu().to(dtype).contiguous() for name, dtype in _TENSORS.items()}
    if graph.influence is not None:
        tensors["influence"] = graph.influence.detach().to(torch.float32).contiguous()
    storages: set[int] = set()
    for name, tensor in tensors.items():  # safetensors refuses tensors that share memory: copy repeats
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in storages and tensor.numel():
            tensors[name] = tensor.clone()
        storages.add(ptr)
    header = _header(graph)
    metadata = {HEADER_KEY: header, CHECKSUM_KEY: checksum(header, tensors)}

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        _sort_metadata_in_place(tmp)
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


def _corrupt(path: Path, why: str) -> ValueError:
    return ValueError(f"{path} is corrupt: {why}. Re-create the graph, or restore an intact copy of the file")


def _read_header(path: Path, raw: dict[str, str] | None) -> dict[str, Any]:
    if not raw or HEADER_KEY not in raw:
        raise ValueError(
            f"{path} is a safetensors file but not a circuit-atlas graph, or it is corrupt "
            f"(no {HEADER_KEY!r} entry in its metadata)"
        )
    try:
        header = json.loads(raw[HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise _corrupt(path, f"its graph header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a circuit-atlas graph, or it is corrupt (header format is not {FORMAT!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _corrupt(path, f"invalid graph format version {version!r}")
    if version > VERSION:
        raise ValueError(
            f"{path} uses graph format version {version}, newer than this circuit-atlas reads "
            f"(up to {VERSION}); upgrade circuit-atlas to load it"
        )
    if version >= 2 and CHECKSUM_KEY not in raw:
        raise _corrupt(path, f"a version {version} graph without its {CHECKSUM_KEY!r} checksum")
    missing = [k for k in ("prompt", "tokens", "n_layers", "logit_labels", "metadata") if k not in header]
    if missing:
        raise _corrupt(path, f"its graph header lacks {', '.join(missing)}")
    return header


def load_graph(path: str | os.PathLike, *, verify: bool = True) -> Graph:
    """Read a Graph written by `save_graph`. Raises FileNotFoundError or ValueError naming `path`.

    verify: check the file's sha256 checksum (version 2 files) before trusting its contents.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no graph file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata()
            names = set(f.keys())
            if raw and CHECKSUM_KEY in raw and HEADER_KEY in raw and verify:
                # checked first, so that damage anywhere reads as damage, not as a strange graph
                stored = {name: f.get_tensor(name) for name in names}
                if checksum(raw[HEADER_KEY], stored) != raw[CHECKSUM_KEY]:
                    raise _corrupt(path, "its contents do not match the sha256 checksum stored when it was written")
                get = stored.__getitem__
            else:
                get = f.get_tensor
            header = _read_header(path, raw)
            layout = _TENSORS if header["version"] >= 2 else _TENSORS_V1
            missing = [name for name in layout if name not in names]
            if missing:
                raise _corrupt(path, f"missing tensors {', '.join(missing)}")
            tensors = {name: get(name).to(dtype) for name, dtype in layout.items()}
            influence = get("influence").to(torch.float32) if "influence" in names else None
    except ValueError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated / garbage files
        raise ValueError(
            f"{path} is corrupt or not a safetensors file ({type(exc).__name__}: {exc}); "
            "re-create it, or restore an intact copy"
        ) from None
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
        raise _corrupt(path, f"its tensors do not form a graph ({exc})") from None
