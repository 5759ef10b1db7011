"""GGUF files in: checked, converted once into a normal Hugging Face folder, cached by content.

A GGUF file (llama.cpp's format) holds a model's config, tokenizer and (usually quantised)
weights. `transformers` reads it through the optional `gguf` package, dequantising every tensor
to float; that takes from seconds to minutes, so a file is converted once and the folder
(safetensors weights, config.json, tokenizer files, and `circuit_atlas_gguf.json` naming the
source file and its sha256) is kept under the cache, keyed by the file's sha256:

    ~/.cache/circuit-atlas/gguf/<sha256[:16]>/      (CIRCUIT_ATLAS_CACHE moves ~/.cache/circuit-atlas)

`ReplacementModel.from_pretrained("model.gguf", ...)` (or a directory holding one .gguf and no
config.json) goes through `gguf_model_dir`; `circuit-atlas convert-gguf FILE --out DIR` writes the
folder wherever asked. The converted folder loads with plain `from_pretrained`, no `gguf` needed.

Weights dequantised from 4-8-bit files are a real trained model, not bit-identical to the
original float checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

from .architectures import architecture_for

FORMAT_VERSION = 1
PROVENANCE = "circuit_atlas_gguf.json"
GGUF_MAGIC = b"GGUF"

# GGUF `general.architecture` -> the Hugging Face model_type transformers gives it (and we serve).
GGUF_ARCHITECTURES = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
    "gpt2": "gpt2",
}
INSTALL_HINT = "install GGUF support with `pip install gguf accelerate` (or `pip install circuit-atlas[gguf]`)"


def cache_root() -> Path:
    base = os.environ.get("CIRCUIT_ATLAS_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "circuit-atlas"


def is_gguf(path: str | Path) -> bool:
    """A .gguf file, a file starting with the GGUF magic, or a directory with a .gguf and no config.json."""
    p = Path(path)
    if p.is_dir():
        return not (p / "config.json").exists() and any(p.glob("*.gguf"))
    if p.suffix.lower() == ".gguf":
        return True
    if p.is_file():
        with p.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    return False


def gguf_file(path: str | Path) -> Path:
    """The GGUF file named by `path` (itself, or the single .gguf inside a directory)."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.gguf"))
        if len(found) != 1:
            names = [f.name for f in found]
            raise ValueError(f"{str(p)!r} holds {len(found)} .gguf files {names}; pass the path of the one to load")
        return found[0]
    if not p.is_file():
        raise FileNotFoundError(f"GGUF file {str(p)!r} does not exist")
    return p


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def inspect_gguf(path: str | Path) -> dict:
    """Check a GGUF file before the slow load: magic, completeness, supported architecture.

    Returns {"architecture": GGUF name, "model_type": HF model_type, "n_tensors": int}.
    """
    p = gguf_file(path)
    size = p.stat().st_size
    with p.open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise ValueError(f"{str(p)!r} is not a GGUF file (it does not start with the 'GGUF' magic bytes)")
    version = struct.unpack("<I", head[4:8])[0]
    if version not in (2, 3):
        raise ValueError(f"{str(p)!r} is GGUF version {version}; only versions 2 and 3 are read")
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise ImportError(f"reading {str(p)!r} needs the `gguf` package: {INSTALL_HINT}") from exc
    truncated = (
        f"{str(p)!r} is truncated or corrupt ({size} bytes on disk); download or assemble the file again "
        "(compare its sha256 with the publisher's)"
    )
    try:
        reader = GGUFReader(p)
    except Exception as exc:  # numpy/struct errors reading past the end of a cut file
        raise ValueError(f"{truncated}: {exc}") from exc
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise ValueError(f"{truncated}: its tensors need {end} bytes")
    field = reader.fields.get("general.architecture")
    if field is None:
        raise ValueError(f"{str(p)!r} has no general.architecture field; it is not a model GGUF")
    arch = bytes(field.parts[field.data[0]]).decode("utf-8")
    if arch not in GGUF_ARCHITECTURES:
        raise ValueError(
            f"{str(p)!r} is a GGUF of architecture {arch!r}, which circuit-atlas does not read; supported GGUF "
            f"architectures are {sorted(GGUF_ARCHITECTURES)}. Use a model of one of those families, or convert "
            "the original checkpoint to a Hugging Face folder yourself."
        )
    model_type = GGUF_ARCHITECTURES[arch]
    architecture_for(model_type)  # the engine side must serve it too
    return {"architecture": arch, "model_type": model_type, "n_tensors": len(reader.tensors)}


def convert_gguf(path: str | Path, out_dir: str | Path, *, sha256: str | None = None) -> Path:
    """Write the GGUF's model (float32 safetensors), config and tokenizer as a Hugging Face folder.

    The folder appears atomically (written beside it, then renamed), so an interrupted
    conversion leaves nothing that looks complete.
    """
    import torch

    src = gguf_file(path)
    info = inspect_gguf(src)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{str(out)!r} exists and is not an empty directory; choose a new --out directory")
    try:
        import accelerate  # noqa: F401  (transformers' GGUF loader needs it)
    except ImportError as exc:
        raise ImportError(f"converting a GGUF needs the `accelerate` package: {INSTALL_HINT}") from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    # The weights are already dequantised floats; drop the GGUF "quantizer" so save_pretrained
    # writes an ordinary checkpoint (it refuses quantized models otherwise).
    model.hf_quantizer = None
    model.is_quantized = False
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the folder is an ordinary model directory
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        provenance = {
            "format_version": FORMAT_VERSION,
            "source": src.name,
            "sha256": sha256 or sha256_file(src),
            "gguf_architecture": info["architecture"],
            "model_type": info["model_type"],
            "dtype": "float32",
        }
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cached_sha256(src: Path, root: Path) -> str:
    """sha256 of `src`, remembered by (path, size, mtime) in root/hashes.json: rehash only a changed file."""
    st = src.stat()
    key = f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index_path = root / "hashes.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if key not in index:
        index[key] = sha256_file(src)
        root.mkdir(parents=True, exist_ok=True)
        tmp = index_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index, indent=1) + "\n")
        tmp.replace(index_path)
    return index[key]


def gguf_model_dir(path: str | Path, *, cache: str | Path | None = None) -> Path:
    """The cached Hugging Face folder of a GGUF file, converting it on first use."""
    src = gguf_file(path)
    inspect_gguf(src)  # clear errors before hashing hundreds of MB
    root = Path(cache) if cache is not None else cache_root() / "gguf"
    digest = cached_sha256(src, root)
    out = root / digest[:16]
    marker = out / PROVENANCE
    if marker.is_file():
        recorded = json.loads(marker.read_text())
        if recorded.get("sha256") == digest and recorded.get("format_version") == FORMAT_VERSION:
            return out
        shutil.rmtree(out)  # a stale or foreign folder under our key: rebuild it
    elif out.exists():
        shutil.rmtree(out)  # an incomplete folder (no provenance written)
    return convert_gguf(src, out, sha256=digest)


def add_convert_gguf_parser(sub) -> None:
    """`circuit-atlas convert-gguf FILE --out DIR` (wired into the CLI)."""
    p = sub.add_parser("convert-gguf", help="write a GGUF model as a Hugging Face folder (weights + tokenizer)")
    p.add_argument("file", help="the .gguf file (or a directory holding exactly one)")
    p.add_argument("--out", required=True, help="new directory to write the folder to")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args) -> int:
    import sys

    try:
        out = convert_gguf(args.file, args.out)
    except ImportError as exc:
        print(f"circuit-atlas: error: {exc}", file=sys.stderr)
        return 2
    info = json.loads((out / PROVENANCE).read_text())
    print(f"wrote {out} ({info['model_type']}, from {info['source']}, sha256 {info['sha256'][:16]}...)")
    return 0
