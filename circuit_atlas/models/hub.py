"""Hugging Face Hub ids, as users type them, resolved to local directories through `huggingface_hub`.

    ReplacementModel.from_pretrained("google/gemma-2-2b", "mntss/gemma-scope-transcoders")

A reference is `owner/repo[/subfolder][@revision]` or `hf://owner/repo[/subfolder][?revision=r]`
(circuit-tracer's two spellings). Downloads go to the normal Hub cache (HF_HUB_CACHE, revisions
and all), so a repository fetched once is found again offline (HF_HUB_OFFLINE=1) - and one that is
neither reachable nor cached is one clear error naming the fix.

Transcoder repositories whose config.yaml lists per-layer files in *other* repositories (as
circuit-tracer's GemmaScope configs do: `transcoders: ["hf://google/gemma-scope-2b-pt-transcoders/
layer_0/.../params.npz", ...]`) are resolved file by file; a local directory is then written under
~/.cache/circuit-atlas/hub/ holding that config.yaml with each entry replaced by the cached file's
local path, which the ordinary loader (transcoders/io.py) reads.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .gguf import cache_root

_REPO = r"[A-Za-z0-9][\w.-]*/[\w.-]+"
_PLAIN = re.compile(rf"^(?P<repo>{_REPO})(?P<sub>(/[\w.-]+)*)(@(?P<rev>[\w./-]+))?$")
_HF = re.compile(rf"^hf://(?P<repo>{_REPO})(?P<sub>(/[^?]+)*)(\?revision=(?P<rev>[\w./-]+))?$")

MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.jinja", "tokenizer*", "*.txt"]
TRANSCODER_FILES = ["*.yaml", "*.json", "*.safetensors", "*.npz"]


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    subfolder: str  # "" for the repository root
    revision: str | None

    def __str__(self) -> str:
        sub = f"/{self.subfolder}" if self.subfolder else ""
        return f"{self.repo_id}{sub}" + (f"@{self.revision}" if self.revision else "")


def parse_hub_ref(name: str) -> HubRef | None:
    """The HubRef a string spells, or None when it is not a Hub reference."""
    match = _HF.match(name) or _PLAIN.match(name)
    if not match:
        return None
    sub = (match.group("sub") or "").strip("/")
    return HubRef(match.group("repo"), sub, match.group("rev"))


def looks_like_hub_id(name) -> bool:
    """A string that is not an existing local path and reads as owner/repo[...] or hf://..."""
    if not isinstance(name, str) or Path(name).expanduser().exists():
        return False
    if name.startswith(("/", "./", "../", "~")):
        return False
    return parse_hub_ref(name) is not None


class HubUnavailableError(FileNotFoundError):
    """A Hub reference that is neither reachable nor in the local cache."""


def _unavailable(ref: HubRef | str, what: str, exc: Exception) -> HubUnavailableError:
    from huggingface_hub import constants

    offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
    return HubUnavailableError(
        f"{what} {str(ref)!r} is not a local path, and the Hugging Face Hub repository could not be reached{offline} "
        f"nor found in the cache {constants.HF_HUB_CACHE}. Fix: connect and retry (log in with `hf auth login` for "
        f"gated repositories), download it on a connected machine (`hf download {getattr(ref, 'repo_id', ref)}`) "
        f"and copy the cache, or pass a local directory. ({type(exc).__name__}: {exc})"
    )


def _snapshot(ref: HubRef, patterns: list[str], what: str) -> Path:
    from huggingface_hub import snapshot_download

    prefix = f"{ref.subfolder}/" if ref.subfolder else ""
    try:
        root = snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=[prefix + p for p in patterns])
    except Exception as exc:  # offline, unknown repository, revision, gated, connection errors
        raise _unavailable(ref, what, exc) from exc
    folder = Path(root) / ref.subfolder
    if not folder.is_dir():
        raise HubUnavailableError(f"{what} {str(ref)!r}: the repository has no folder {ref.subfolder!r}")
    return folder


def hub_model_dir(name: str) -> Path:
    """Local directory (in the Hub cache) of a model repository: config, weights, tokenizer."""
    ref = parse_hub_ref(name)
    if ref is None:
        raise ValueError(f"{name!r} is not a Hugging Face Hub reference (owner/repo[/subfolder][@revision])")
    return _snapshot(ref, MODEL_FILES, "model")


def _hub_file(url: str, what: str) -> Path:
    """Local path of one hf://owner/repo/path[?revision=r] file (downloaded or cached)."""
    from huggingface_hub import hf_hub_download

    ref = parse_hub_ref(url)
    if ref is None or not ref.subfolder:
        raise ValueError(f"{what}: {url!r} is not an hf://owner/repo/path/to/file reference")
    try:
        return Path(hf_hub_download(ref.repo_id, ref.subfolder, revision=ref.revision))
    except Exception as exc:
        raise _unavailable(url, what, exc) from exc


def hub_transcoders_dir(name: str) -> Path:
    """Local directory of a transcoder repository, with files listed from other repositories fetched."""
    ref = parse_hub_ref(name)
    if ref is None:
        raise ValueError(f"{name!r} is not a Hugging Face Hub reference (owner/repo[/subfolder][@revision])")
    folder = _snapshot(ref, ["config.yaml"], "transcoder set")
    config_path = folder / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    entries = config.get("transcoders") if isinstance(config, dict) else None
    if not entries:
        return _snapshot(ref, TRANSCODER_FILES, "transcoder set")  # the per-layer files live in this repo
    local = []
    for index, entry in enumerate(entries):
        path = entry.get("filepath") if isinstance(entry, dict) else entry
        if not isinstance(path, str):
            raise ValueError(f"{str(ref)!r} config.yaml: transcoders[{index}] must be a file reference, got {entry!r}")
        if path.startswith("hf://"):
            resolved = str(_hub_file(path, f"transcoder set {str(ref)!r}, layer {index}"))
        else:  # relative to the config's folder in this same repository
            resolved = str(_snapshot(ref, [path], "transcoder set") / path)
        local.append({**entry, "filepath": resolved} if isinstance(entry, dict) else resolved)
    # A config.yaml naming the cached files, in a folder keyed by the resolved snapshot.
    key = hashlib.sha256(f"{ref}|{folder.resolve()}".encode()).hexdigest()[:16]
    out = cache_root() / "hub" / key
    out.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({**config, "transcoders": local, "source": str(ref)}, sort_keys=False)
    tmp = out / f".config.{os.getpid()}.yaml"
    tmp.write_text(text)
    tmp.replace(out / "config.yaml")
    return out
