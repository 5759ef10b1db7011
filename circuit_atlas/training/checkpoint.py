"""Resumable training checkpoints, and the atomic swap that puts a finished set in place.

A checkpoint is a directory of two files:

    state.safetensors   model.* (parameters and normalisation buffers), optim.{i}.* (Adam moments
                        and step of parameter i), rng.torch (torch's global RNG state)
    state.json          format, version, step, sparsity coefficient, config, model and data identity,
                        Adam's param_groups

It is written into a temporary directory beside its path and renamed into place, so a crash
leaves the previous checkpoint intact. The batch order needs no saved state: it is a function
of (seed, step) (see data.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..transcoders.formats import CONFIG, MANIFEST
from ..transcoders.io import ordinary_mode, swap_into_place
from .config import TrainConfig

CHECKPOINT_FORMAT = "circuit-atlas-training-checkpoint"
CHECKPOINT_VERSION = 1
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"


@dataclass
class Checkpoint:
    step: int
    lam: list[float]  # sparsity coefficient per layer
    config: TrainConfig
    identity: dict  # model and data the run was started on
    tensors: dict[str, torch.Tensor]
    param_groups: list[dict]


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def check_output_path(path: Path) -> None:
    """Refuse, before any work, an output path that a finished set could not replace."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"cannot write transcoders to {path}: it exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not ((path / MANIFEST).exists() or (path / CONFIG).exists()):
        raise ValueError(
            f"refusing to write transcoders to {path}: the directory is not empty and holds no transcoder set; "
            "choose another path or empty it"
        )


def describe_existing_set(path: Path) -> str | None:
    """What a finished transcoder set at `path` is, in a few words (None if there is none)."""
    if not path.is_dir() or not any(path.iterdir()):
        return None
    if not (path / MANIFEST).exists():
        return f"a transcoder set ({CONFIG}, circuit-tracer layout)" if (path / CONFIG).exists() else None
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"a transcoder set whose {MANIFEST} cannot be read"
    widths = sorted(set(manifest.get("widths") or []))
    parts = [f"{manifest.get('kind', '?')} {manifest.get('activation', '?')}, {manifest.get('n_layers', '?')} layers"
             + (f" x {widths[0]} features" if len(widths) == 1 else "")]  # fmt: skip
    model = (manifest.get("metadata") or {}).get("model")
    if model:
        parts.append(f"for {model}")
    try:
        metrics = json.loads((path / "metrics.json").read_text())
        parts.append(f"FVU {metrics['fvu_mean']:.3f}, L0 {metrics['l0_mean']:.1f}")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime((path / MANIFEST).stat().st_mtime))
    parts.append(f"written {stamp}")
    return "a transcoder set (" + ", ".join(parts) + ")"


def save_checkpoint(path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    lam: list[float], config: TrainConfig, identity: dict) -> None:  # fmt: skip
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    opt = optimizer.state_dict()
    for i, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": step,
        "lam": lam,
        "config": config.to_dict(),
        "identity": identity,
        "param_groups": opt["param_groups"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.writing-", dir=path.parent))
    try:
        save_file(tensors, str(tmp / STATE_TENSORS))
        os.chmod(tmp / STATE_TENSORS, ordinary_mode())
        _fsync(tmp / STATE_TENSORS)
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        _fsync(tmp / STATE_JSON)
        os.chmod(tmp, ordinary_mode(directory=True))
        swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(path: Path) -> Checkpoint:
    try:
        meta = json.loads((path / STATE_JSON).read_text())
        tensors = load_file(str(path / STATE_TENSORS))
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable training checkpoint ({err})") from err
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} is not a version-{CHECKPOINT_VERSION} circuit-atlas training checkpoint "
            f"(format {meta.get('format')!r}, version {meta.get('version')!r})"
        )
    return Checkpoint(meta["step"], meta["lam"], TrainConfig.from_dict(meta["config"]), meta["identity"], tensors,
                      meta["param_groups"])  # fmt: skip


def check_compatible(ckpt: Checkpoint, path: Path, config: TrainConfig, identity: dict) -> None:
    """ValueError naming every setting, model or data fact on which the checkpoint and this run differ."""
    problems = [f"config {d}" for d in ckpt.config.differences(config)]
    for key in sorted(set(ckpt.identity) | set(identity)):
        if ckpt.identity.get(key) != identity.get(key):
            problems.append(f"{key}: {ckpt.identity.get(key)!r} != {identity.get(key)!r}")
    if problems:
        raise ValueError(
            f"the checkpoint at {path} does not match this run (checkpoint != now): "
            + "; ".join(problems)
            + ". Rerun with the checkpoint's settings, or delete the checkpoint to start over"
        )
    if ckpt.step > config.steps:
        raise ValueError(f"the checkpoint at {path} is at step {ckpt.step}, past this run's {config.steps} steps")


def restore(ckpt: Checkpoint, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    module.load_state_dict({k[len("model.") :]: v for k, v in ckpt.tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for key, value in ckpt.tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": ckpt.param_groups})
    torch.set_rng_state(ckpt.tensors["rng.torch"])
