"""Train a transcoder set for any supported Hugging Face causal LM.

1. Setup: join the process group if launched by torchrun, load the model, resolve the config,
   tokenize the data (a held-out tail is kept for the metrics).
2. Start: restore a checkpoint (refusing one that does not match), or initialise from the
   activations of batch 0 (harvested whole on every process, so all start identically).
3. Loop: per step, harvest this process's share of the batch under no_grad (models/hooks.py),
   compute the loss of every layer jointly (coder.py), Adam step; DDP averages the gradients
   across processes. Checkpoint every `checkpoint_every` steps.
4. Finish (rank 0): BatchTopK thresholds are calibrated, the set is exported in raw units,
   evaluated on the held-out text (metrics.py), and written with metrics.json in one atomic swap;
   each way the result is poor (metrics.quality_warnings) is a TrainingQualityWarning and a line
   of metrics["warnings"].
3b. Ctrl-C (interrupt.py): the step under way finishes, a checkpoint is written, the run returns.

Data parallelism: every process draws the same global batch (a function of seed and step) and
keeps its rank's contiguous share; each loss is the mean over its share, and DDP averages the
gradients, so with equal shares the update is the single-process one up to float rounding.
BatchTopK alone differs: it selects over each process's share, not the global batch.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..models.architectures import Architecture, architecture_for
from ..models.hooks import harvest
from ..transcoders.io import save_transcoders, swap_into_place
from .checkpoint import (
    STATE_JSON,
    check_compatible,
    check_output_path,
    describe_existing_set,
    load_checkpoint,
    restore,
    save_checkpoint,
)
from .coder import TrainableTranscoders
from .config import TrainConfig
from .data import TokenData, read_documents, trim_padding
from .interrupt import StopOnInterrupt
from .metrics import SKIP_POSITIONS, TrainingQualityWarning, evaluate, quality_warnings
from .sparse import batchtopk_threshold

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
L0_CONTROL_RATE = 0.05  # per step, each layer's lambda moves by at most exp(+-0.05) toward target_l0
CALIBRATION_TOKENS = 16384  # tokens (in at most 8 batches) that turn BatchTopK into JumpReLU thresholds


@dataclass
class TrainResult:
    path: Path | None  # the written set (None if the run stopped early or on ranks > 0)
    metrics: dict | None
    step: int
    seconds: float
    interrupted: bool = False  # stopped by Ctrl-C (a checkpoint at `step` was written)
    checkpoint: Path | None = None  # where the checkpoint of an unfinished run is


# --- setup -------------------------------------------------------------------------------------
def _setup_distributed(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world size, whether we created the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    created = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    return dist.get_rank(), dist.get_world_size(), created


def load_causal_lm(model_dir, device: torch.device | str = "cpu"):
    """(hf_model, tokenizer, architecture) of a local Hugging Face causal-LM directory, float32, eval."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..replacement_model import load_tokenizer

    p = Path(model_dir).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"model directory {str(model_dir)!r} does not exist")
    if not (p / "config.json").is_file():
        raise ValueError(f"{p} has no config.json: it is not a Hugging Face model directory")
    try:
        config = AutoConfig.from_pretrained(p)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{p}/config.json cannot be read as a Hugging Face config ({err})") from err
    try:
        arch = architecture_for(getattr(config, "model_type", None))
    except ValueError as err:
        raise ValueError(f"{p} is not a causal language model circuit-atlas can train transcoders for: {err}") from err
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32, attn_implementation="eager")
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{p} could not be loaded as a causal language model ({err})") from err
    tokenizer = load_tokenizer(p)  # refuses a directory without tokenizer files, which transformers loads as empty
    hf_model.to(device).eval().requires_grad_(False)
    return hf_model, tokenizer, arch


def default_checkpoint_dir(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoint")


def _max_positions(hf_model: nn.Module) -> int | None:
    c = hf_model.config
    return getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)


# --- schedules ---------------------------------------------------------------------------------
def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of cfg.lr at the last step."""
    if step < cfg.lr_warmup_steps:
        return cfg.lr * (step + 1) / cfg.lr_warmup_steps
    span = max(1, cfg.steps - cfg.lr_warmup_steps)
    progress = min(1.0, (step - cfg.lr_warmup_steps) / span)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def sparsity_ramp(cfg: TrainConfig, step: int) -> float:
    warm = cfg.sparsity_warmup * cfg.steps
    return 1.0 if warm <= 0 else min(1.0, (step + 1) / warm)


def update_lambda(cfg: TrainConfig, lam: list[float], step: int, l0: list[float]) -> list[float]:
    """Multiplicative control of each layer's lambda toward target_l0, once the sparsity ramp is over."""
    if cfg.target_l0 is None or cfg.activation not in ("jumprelu", "relu") or sparsity_ramp(cfg, step) < 1:
        return lam
    out = []
    for lam_l, l0_l in zip(lam, l0):
        error = math.log(max(l0_l, 1e-3) / cfg.target_l0)
        out.append(lam_l * math.exp(L0_CONTROL_RATE * max(-1.0, min(1.0, error))))
    return out


# --- activations -------------------------------------------------------------------------------
def activations(hf_model: nn.Module, arch: Architecture, cfg: TrainConfig, batch: tuple[torch.Tensor, torch.Tensor]):
    """Inputs and outputs (L, N, d), float32, at the N valid non-BOS positions of a batch (ids, valid), each (B, T)."""
    ids, valid = trim_padding(*batch)
    device = next(hf_model.parameters()).device
    X, Y = harvest(hf_model, ids.to(device), cfg.input_hook, cfg.output_hook, arch=arch)
    keep = valid.to(device).clone()
    keep[:, :SKIP_POSITIONS] = False
    return X[:, keep].float(), Y[:, keep].float()


@torch.no_grad()
def calibrate_batchtopk(coder: TrainableTranscoders, hf_model, arch, cfg: TrainConfig, data: TokenData) -> torch.Tensor:
    """Per-layer JumpReLU thresholds (L, F) reproducing BatchTopK, averaged over a few training batches."""
    B = cfg.sequences_per_batch
    n_batches = min(8, math.ceil(CALIBRATION_TOKENS / (B * (cfg.seq_len - SKIP_POSITIONS))))
    cuts = []
    for i in range(n_batches):
        x, _ = activations(hf_model, arch, cfg, data.batch(cfg.steps + i, B))
        cuts.append(batchtopk_threshold(coder.encode(x * coder.in_scale[:, None, None]), cfg.k))
    return torch.stack(cuts).mean(0)[:, None].expand(coder.n_layers, coder.width).clone()


# --- output ------------------------------------------------------------------------------------
def write_output(tc, metrics: dict, out: Path) -> Path:
    """Write the set and metrics.json into a staging directory, then swap it in as `out`."""
    check_output_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging-{uuid.uuid4().hex[:8]}")
    try:
        save_transcoders(tc, staging)
        path = staging / METRICS_FILE
        path.write_text(json.dumps(metrics, indent=2) + "\n")
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


# --- the run -----------------------------------------------------------------------------------
@dataclass
class _Run:
    """What one training run holds between its phases."""

    cfg: TrainConfig
    hf_model: nn.Module
    arch: Architecture
    model_name: str
    data: TokenData
    identity: dict  # model and data facts a checkpoint must match
    device: torch.device
    rank: int
    world: int
    ckpt_path: Path
    coder: TrainableTranscoders | None = None
    optimizer: torch.optim.Optimizer | None = None
    step: int = 0
    lam: list[float] = field(default_factory=list)  # sparsity coefficient per layer


def train_transcoders(
    model,
    data,
    out,
    config: TrainConfig,
    *,
    eval_data=None,
    checkpoint_dir=None,
    resume: bool = False,
    force: bool = False,
    stop_at_step: int | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train transcoders for `model` on `data` and write them (our format + metrics.json) to `out`.

    model: a local HF model directory, or (hf_model, tokenizer). data / eval_data: a text file, a
    .jsonl file or a directory of them (without eval_data the tail of data is held out).
    checkpoint_dir: where checkpoints go [<out>.checkpoint]; it is deleted once `out` is written.
    resume: continue from the checkpoint there (ValueError if it does not match this run); without
    it an existing checkpoint is an error. force: replace a transcoder set already at `out` (without
    it that is an error, unless `resume` continues the checkpoint of the run that will replace it).
    stop_at_step: checkpoint and return after that step. Ctrl-C (SIGINT) during the steps finishes
    the step under way, writes a checkpoint and returns with `interrupted` set (a second Ctrl-C
    raises KeyboardInterrupt at once).
    Raises ValueError / FileNotFoundError for bad input before anything is written.
    """
    start = time.perf_counter()
    out = Path(out).expanduser()
    check_output_path(out)
    ckpt_path = Path(checkpoint_dir).expanduser() if checkpoint_dir else default_checkpoint_dir(out)
    has_ckpt = (ckpt_path / STATE_JSON).exists()
    if has_ckpt and not resume:
        raise ValueError(
            f"a training checkpoint exists at {ckpt_path}: pass resume=True (--resume) to continue it, "
            "or delete it to start over"
        )
    existing = describe_existing_set(out)
    if existing and not force and not (resume and has_ckpt):
        finished = (
            f"there is no checkpoint at {ckpt_path} to resume (the run that wrote it finished); " if resume else ""
        )
        raise ValueError(
            f"{out} already holds {existing}: {finished}pass force=True (--force) to replace it, "
            "or choose another output path"
        )
    if eval_data is not None and config.eval_tokens == 0:
        raise ValueError("eval_data (--eval-data) is given but eval_tokens = 0 (--eval-tokens 0) measures nothing on "
                         "it: drop one of them")  # fmt: skip
    if stop_at_step is not None and stop_at_step < 1:
        raise ValueError(f"stop_at_step must be at least 1, got {stop_at_step}")
    local_rank = os.environ.get("LOCAL_RANK")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() and local_rank else "cpu"))
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", int(local_rank))
    rank, world, created = _setup_distributed(device)
    run = None
    try:
        run = _setup(model, data, eval_data, config, device, rank, world, ckpt_path)
        _start(run, resume and has_ckpt)
        train_seconds, tokens, interrupted = _loop(run, stop_at_step, progress)
        if interrupted or run.step < run.cfg.steps or rank != 0:
            return TrainResult(None, None, run.step, time.perf_counter() - start, interrupted, ckpt_path)
        metrics = _finish(run, out, train_seconds, tokens)
        return TrainResult(out, metrics, run.step, time.perf_counter() - start)
    finally:
        if created:
            # Free the DDP wrapper (its reducer holds gloo work) while the group is alive: a reducer torn
            # down after destroy_process_group can abort the process at exit (SIGABRT, "terminate called").
            del run
            gc.collect()
            dist.barrier()
            dist.destroy_process_group()


def _setup(model, data_path, eval_path, config, device, rank, world, ckpt_path) -> _Run:
    """Phase 1: read the data (cheap checks first), load the model, resolve the config, tokenize."""
    t0 = time.perf_counter()
    docs = read_documents(data_path)
    eval_docs = read_documents(eval_path) if eval_path is not None else None
    if isinstance(model, (tuple, list)):
        hf_model, tokenizer = model
        arch = architecture_for(hf_model.config.model_type)
        hf_model.to(device).eval().requires_grad_(False)
        model_name = getattr(hf_model.config, "_name_or_path", "") or arch.name
    else:
        hf_model, tokenizer, arch = load_causal_lm(model, device)
        model_name = str(model)
    L, d = hf_model.config.num_hidden_layers, hf_model.get_input_embeddings().weight.shape[1]
    cfg = config.resolve(d)
    B = cfg.sequences_per_batch
    if B % world:
        raise ValueError(f"{B} sequences per batch cannot be split evenly over {world} processes")
    limit = _max_positions(hf_model)
    if limit is not None and cfg.seq_len > limit:
        raise ValueError(f"seq_len {cfg.seq_len} is longer than the model's context of {limit} tokens")
    data = TokenData.from_documents(docs, tokenizer, cfg.seq_len, cfg.eval_tokens, cfg.seed, eval_docs,
                                    cfg.pack_documents, train_sequences=cfg.steps * B)  # fmt: skip
    identity = {"model_type": arch.name, "n_layers": L, "d_model": d, "vocab_size": len(tokenizer),
                "data": data.fingerprint()}  # fmt: skip
    log.info("setup: %s %s, %d layers x %d features, %d training sequences of %d tokens, %d processes (%.1f s)",
             cfg.kind, cfg.activation, L, cfg.width, len(data.train), cfg.seq_len, world,
             time.perf_counter() - t0)  # fmt: skip
    return _Run(cfg, hf_model, arch, model_name, data, identity, device, rank, world, ckpt_path)


def _start(run: _Run, resume: bool) -> None:
    """Phase 2: restore the checkpoint, or initialise from batch 0 (the whole batch, on every process)."""
    cfg, L = run.cfg, run.identity["n_layers"]
    torch.manual_seed(cfg.seed)
    run.coder = TrainableTranscoders(cfg, L, run.identity["d_model"]).to(run.device)
    run.optimizer = torch.optim.Adam(run.coder.parameters(), lr=cfg.lr)
    run.step, run.lam = 0, [cfg.sparsity_coefficient] * L
    if resume:
        ckpt = load_checkpoint(run.ckpt_path)
        check_compatible(ckpt, run.ckpt_path, cfg, run.identity)
        restore(ckpt, run.coder, run.optimizer)
        run.step, run.lam = ckpt.step, ckpt.lam
        log.info("start: resumed from %s at step %d", run.ckpt_path, run.step)
        return
    x, y = activations(run.hf_model, run.arch, cfg, run.data.batch(0, cfg.sequences_per_batch))
    run.coder.initialize(x.cpu(), y.cpu(), cfg.seed)
    run.coder.to(run.device)


def _loop(run: _Run, stop_at_step: int | None, progress: bool) -> tuple[float, int, bool]:
    """Phase 3: the training steps. Returns (seconds, tokens trained on by all processes, whether
    Ctrl-C stopped it). Ctrl-C (on any process) ends the step under way, checkpoints and stops."""
    cfg, coder, optimizer, B = run.cfg, run.coder, run.optimizer, run.cfg.sequences_per_batch
    trainable = nn.parallel.DistributedDataParallel(coder) if run.world > 1 else coder
    log.info("loop: from step %d to %d", run.step, cfg.steps)
    bar = tqdm(total=cfg.steps, initial=run.step, disable=not progress or run.rank != 0,
               desc=f"train {cfg.kind}", dynamic_ncols=True)  # fmt: skip
    t0, tokens, first, interrupted = time.perf_counter(), 0, run.step, False
    with StopOnInterrupt() as interrupt:
        while run.step < cfg.steps:
            step = run.step
            x, y = activations(run.hf_model, run.arch, cfg, run.data.batch(step, B, run.rank, run.world))
            n_tokens = run.data.batch_token_count(step, B, SKIP_POSITIONS)  # global: DDP-exact normalisation
            tokens += n_tokens
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step)
            lam = torch.tensor(run.lam, device=run.device) * sparsity_ramp(cfg, step)
            stats = trainable(x, y, lam, n_tokens / run.world)
            optimizer.zero_grad(set_to_none=True)
            stats.loss.backward()
            optimizer.step()
            # (L + 1,): the layers' L0 and whether Ctrl-C was pressed, agreed on by all processes
            shared = torch.cat([stats.l0.detach(), torch.tensor([float(interrupt.requested)], device=run.device)])
            if run.world > 1:
                dist.all_reduce(shared)
                shared = shared / run.world
            l0, interrupted = shared[:-1], bool(shared[-1] > 0)
            run.lam = update_lambda(cfg, run.lam, step, l0.tolist())
            run.step += 1
            bar.update(1)
            bar.set_postfix(
                loss=f"{stats.loss.item():.4f}", fvu=f"{stats.fvu.mean().item():.3f}", l0=f"{l0.mean().item():.1f}"
            )
            stopping = interrupted or (stop_at_step is not None and stop_at_step <= run.step < cfg.steps)
            due = cfg.checkpoint_every and (run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps)
            if run.rank == 0 and (stopping or due):
                save_checkpoint(run.ckpt_path, coder, optimizer, run.step, run.lam, cfg, run.identity)
            if stopping:
                break
    bar.close()
    seconds = time.perf_counter() - t0
    log.info("loop: %d steps, %d tokens (%.1f s, %.0f tokens/s)", run.step - first, tokens, seconds,
             tokens / max(seconds, 1e-9))  # fmt: skip
    return seconds, tokens, interrupted


def _finish(run: _Run, out: Path, train_seconds: float, tokens: int) -> dict:
    """Phase 4 (rank 0): calibrate BatchTopK, export, evaluate, write set + metrics.json atomically."""
    cfg, t0 = run.cfg, time.perf_counter()
    threshold = None
    if cfg.activation == "batchtopk":
        threshold = calibrate_batchtopk(run.coder, run.hf_model, run.arch, cfg, run.data)
    metadata = {"model": run.model_name, "training": cfg.to_dict(), "steps": run.step}
    tc = run.coder.export(threshold, name=out.name, metadata=metadata)
    data = run.data
    metrics = evaluate(run.hf_model, run.arch, tc, data.eval, data.eval_valid) if len(data.eval) else {}
    metrics.update({
        "kind": cfg.kind, "activation": cfg.activation, "width": cfg.width, "steps": run.step,
        "sparsity_coefficient": run.lam, "world_size": run.world,
        "train_seconds": train_seconds, "train_tokens_per_second": tokens / max(train_seconds, 1e-9),
        "eval_seconds": time.perf_counter() - t0,
    })  # fmt: skip
    metrics["warnings"] = quality_warnings(metrics, cfg)
    write_output(tc, metrics, out)
    shutil.rmtree(run.ckpt_path, ignore_errors=True)
    for text in metrics["warnings"]:
        warnings.warn(f"{out}: {text}", TrainingQualityWarning, stacklevel=3)
    log.info("finish: wrote %s (FVU %.3f, L0 %.1f, top-1 %.3f; %.1f s)", out, metrics.get("fvu_mean", float("nan")),
             metrics.get("l0_mean", 0), metrics.get("top1_agreement", float("nan")), time.perf_counter() - t0)  # fmt: skip
    return metrics
