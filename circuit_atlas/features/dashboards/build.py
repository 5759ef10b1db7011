"""`features build`: one streaming pass over a corpus -> feature dashboards.

Windows (corpus.py) are batched in stream order, B at a time; batch i is processed by rank
i % world (one process without torchrun). Each batch: the HF model's forward, stopped after the
last transcoder site (models/hooks.harvest, the path training harvests through), then per layer
a = φ(x W_encᵀ + b_enc) (B, S, F), zeroed at BOS and padding, folded into LayerStats (stats.py).

State (what resume and incremental builds continue from) is LayerStats' tensors plus a JSON
header; checkpoints go to DIR/.partial/ every `checkpoint_every` batches, the final state to
DIR/state.safetensors. Every file is written to a temporary name and renamed into place, so an
interrupted build never leaves a half-written dashboard where a good one was.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from .config import BuildConfig
from .corpus import corpus_files, fingerprint, iter_documents, iter_windows
from .stats import LayerStats
from .store import DB_FILE, FORMAT, VERSION, write_dashboards

log = logging.getLogger(__name__)
STATE, STATE_JSON, PARTIAL = "state.safetensors", "state.json", ".partial"


@dataclass
class BuildResult:
    path: Path | None  # the dashboards folder (None on ranks > 0 or when stopped early)
    n_tokens: int  # tokens in the dashboards (all sources)
    new_tokens: int  # tokens this call added
    seconds: float
    timings: dict  # forward / encode / bookkeeping seconds of this process
    skipped: bool = False  # nothing to do: this corpus is already in the dashboards


# --- loading and checks ------------------------------------------------------------------------
def load_pair(model, transcoders, device):
    """(hf_model, tokenizer, arch, transcoders, names) with the checks that they belong together."""
    from ...training.trainer import load_causal_lm
    from ...transcoders.io import load_transcoders
    from ...zoo import resolve_model, resolve_transcoders

    hf, tok, arch = load_causal_lm(resolve_model(model), device)
    tok.model_max_length = 1 << 62  # documents are cut into windows here; silence the tokenizer's length warning
    tc_path = resolve_transcoders(transcoders)
    tc = load_transcoders(tc_path).to(device, torch.float32)
    L, d = hf.config.num_hidden_layers, hf.get_input_embeddings().weight.shape[1]
    if tc.n_layers != L or tc.d_model != d:
        raise ValueError(
            f"the transcoders at {tc_path} do not belong to the model {model}: they have {tc.n_layers} layers reading "
            f"vectors of size {tc.d_model}, the model {L} layers of d_model {d}; pass transcoders trained for this model"
        )
    names = {"model": str(model), "transcoders": str(transcoders) if isinstance(transcoders, str) and not
             Path(transcoders).exists() else (tc.name if tc.name != "transcoders" else Path(tc_path).name)}  # fmt: skip
    return hf, tok, arch, tc, names


def _bos(tokenizer) -> int:
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if candidate is not None:
            return int(candidate)
    raise ValueError("the tokenizer has no BOS, EOS or pad token to start windows with")


# --- state files -------------------------------------------------------------------------------
def _save_state(path: Path, stats: list[LayerStats], header: dict) -> None:
    """stats + header to path (.safetensors) and path.with_suffix('.json'), each renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for l, s in enumerate(stats):
        tensors |= {k: v.detach().cpu().contiguous() for k, v in s.tensors(l).items()}
    tag = uuid.uuid4().hex[:8]
    tmp_t, tmp_j = path.with_name(f".{path.name}.{tag}"), path.with_name(f".{path.stem}.json.{tag}")
    save_file(tensors, str(tmp_t))
    tmp_j.write_text(json.dumps(header, indent=1))
    os.replace(tmp_t, path)  # tensors first: a header always describes tensors at least as new as it
    os.replace(tmp_j, path.with_suffix(".json"))


def _load_state(path: Path, cfg: BuildConfig, device) -> tuple[list[LayerStats], dict]:
    header_path = path.with_suffix(".json")
    try:
        header = json.loads(header_path.read_text())
        tensors = load_file(str(path), device=str(device))
        stats = [LayerStats.from_tensors(tensors, l, cfg) for l in range(header["n_layers"])]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise ValueError(
            f"the build state at {path} is unreadable ({err}); delete {path} and {header_path} to build from scratch"
        ) from err
    if header.get("format") != FORMAT + "-state" or header.get("n_tokens") is None:
        raise ValueError(f"{header_path} is not a dashboards build state; delete it to build from scratch")
    return stats, header


def _check_same(header: dict, cfg: BuildConfig, names: dict, what: str, path: Path) -> None:
    if header["config"] != cfg.result_keys():
        diff = {k: (header["config"].get(k), v) for k, v in cfg.result_keys().items() if header["config"].get(k) != v}
        raise ValueError(
            f"the {what} at {path} was made with other settings {diff} (theirs, yours); "
            "use the same settings, or another --out folder"
        )
    if header["transcoders"] != names["transcoders"]:
        raise ValueError(
            f"the {what} at {path} is for transcoders {header['transcoders']!r}, not {names['transcoders']!r}"
        )


# --- the pass ----------------------------------------------------------------------------------
def _batches(windows, B: int, n_limit: int | None):
    """Lists of B windows (the last may be shorter); stops once n_limit non-BOS tokens are reached."""
    batch, seen = [], 0
    for w in windows:
        if n_limit is not None and seen >= n_limit:
            break
        take = len(w.ids) - 1
        if n_limit is not None and seen + take > n_limit:
            w.ids = w.ids[: 1 + n_limit - seen]  # the user asked for exactly --tokens tokens
            take = n_limit - seen
        seen += take
        batch.append(w)
        if len(batch) == B:
            yield batch
            batch = []
    if batch:
        yield batch


def _activations(hf, arch, tc, ids: torch.Tensor, valid: torch.Tensor, timings: dict) -> list[torch.Tensor]:
    """Feature activations (B, S, F_l) per layer, zero at BOS and padding."""
    from ...models.hooks import harvest

    t0 = time.perf_counter()
    X, _ = harvest(hf, ids, tc.input_hook, tc.output_hook, arch=arch)  # (L, B, S, d)
    t1 = time.perf_counter()
    out = []
    for l in range(tc.n_layers):
        a = tc.activate(l, tc.encode(l, X[l].float()))
        out.append(a * valid.unsqueeze(-1))
    if X.is_cuda:
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    timings["forward"] += t1 - t0
    timings["encode"] += t2 - t1
    return out


def build_dashboards(model, transcoders, data, out, config: BuildConfig | None = None, *, progress: bool = True,
                     stop_after_batches: int | None = None, model_name: str | None = None,
                     transcoders_name: str | None = None) -> BuildResult:  # fmt: skip
    """Build (or resume, or extend with more text) the feature dashboards of `transcoders` on `data`.

    model / transcoders: local directories or zoo names ("toyworld", "toyworld-clt"). data: a text
    file (one document a line), a .jsonl file or a folder (one document a file). out: the dashboards
    folder. A folder that already holds a finished build on this corpus is left as it is; one built on
    other text gets this text added. Under torchrun the corpus is sharded over the processes and rank 0
    writes. stop_after_batches: checkpoint and return after that many batches (for tests of resume).
    model_name / transcoders_name: the names recorded (default: the zoo name, or the set's own name).
    """
    start = time.perf_counter()
    cfg = config or BuildConfig()
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the dashboards")
    device = torch.device(cfg.device)
    local_rank = os.environ.get("LOCAL_RANK")
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", int(local_rank))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    rank = dist.get_rank() if world > 1 else 0
    try:
        names = (model_name, transcoders_name)
        return _build(
            model, transcoders, data, out, cfg, device, rank, world, progress, stop_after_batches, start, names
        )
    finally:
        if created:
            dist.barrier()
            dist.destroy_process_group()


def _build(model, transcoders, data, out, cfg, device, rank, world, progress, stop_after, start, given) -> BuildResult:
    fp = fingerprint(data)  # also checks the data path exists, before the model is loaded
    docs = iter_documents(data)
    first_doc = next(docs)  # raises for an empty or binary corpus before any work
    hf, tok, arch, tc, names = load_pair(model, transcoders, device)
    names = {"model": given[0] or names["model"], "transcoders": given[1] or names["transcoders"]}
    limit = getattr(hf.config, "max_position_embeddings", None) or getattr(hf.config, "n_positions", None)
    if limit is not None and cfg.seq_len > limit:
        raise ValueError(f"--seq-len {cfg.seq_len} is longer than the model's context of {limit} tokens; lower it")
    source = {"data": str(data), "fingerprint": fp, "tokens": cfg.tokens}
    state_path, partial_path = out / STATE, out / PARTIAL / f"rank{rank}-of-{world}.safetensors"
    prev = None
    if (out / STATE_JSON).is_file():
        prev_stats, prev = _load_state(state_path, cfg, device)
        _check_same(prev, cfg, names, "dashboards build", out)
        same_text = [s for s in prev["sources"] if s["fingerprint"] == fp]
        if same_text and source not in prev["sources"]:
            raise ValueError(
                f"{out} already holds this corpus ({same_text[0]['data']}, --tokens {same_text[0]['tokens']}); adding it "
                "again would count it twice. Build into another --out folder to use other limits"
            )
        if source in prev["sources"]:
            if _db_build_id(out) != prev["build_id"] and rank == 0:  # state newer than the file: rewrite it
                _finish(out, prev_stats, prev, hf, arch, tc, tok, cfg, names)
            return BuildResult(out if rank == 0 else None, prev["n_tokens"], 0, time.perf_counter() - start, {}, True)
    elif (out / DB_FILE).is_file():
        raise ValueError(
            f"{out} holds dashboards built without their state (keep_state off): text cannot be added to them; "
            "rebuild into an empty folder"
        )
    base_windows = prev["n_windows"] if prev else 0
    resume = None
    if partial_path.is_file():
        stats, resume = _load_state(partial_path, cfg, device)
        _check_same(resume, cfg, names, "interrupted build", partial_path)
        if resume["source"] != source or resume.get("base_build") != (prev["build_id"] if prev else None):
            raise ValueError(
                f"{partial_path} is an interrupted build on other data ({resume['source']['data']}); finish it with "
                "the same --data, or delete that folder to start over"
            )
    elif prev is not None and rank == 0:
        stats = prev_stats  # incremental: rank 0 carries the dashboards so far, the others start empty
    else:
        stats = [LayerStats(tc.width(l), cfg, device) for l in range(tc.n_layers)]
    done = resume["batches_done"] if resume else 0
    n_tokens = resume["n_tokens"] if resume else (prev["n_tokens"] if prev and rank == 0 else 0)
    new_tokens = resume["new_tokens"] if resume else 0
    total_windows = base_windows

    read = [0]  # bytes of text read so far: the progress bar's measure when no --tokens limit gives a total

    def all_docs():
        for doc in itertools.chain([first_doc], docs):
            read[0] += len(doc.encode()) + 1
            yield doc

    widths = [tc.width(l) for l in range(tc.n_layers)]
    everything = LayerStats.concat(stats)  # all layers' features in one structure: one update per batch
    bos = _bos(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else bos
    timings = {"forward": 0.0, "encode": 0.0, "bookkeeping": 0.0}
    from tqdm.auto import tqdm

    by_tokens = cfg.tokens is not None
    total = cfg.tokens if by_tokens else sum(f.stat().st_size for f in corpus_files(data))
    bar = tqdm(total=total, unit="tok" if by_tokens else "B", unit_scale=True, disable=not progress or rank != 0,
               desc="dashboards")  # fmt: skip
    seen, t_start = 0, time.perf_counter()
    stopped = False
    batches_here = 0
    i = -1
    with torch.no_grad():
        for i, batch in enumerate(_batches(iter_windows(all_docs(), tok, bos, cfg.seq_len, base_windows),
                                           cfg.batch_size, cfg.tokens)):  # fmt: skip
            total_windows = batch[-1].id + 1
            seen += sum(len(w.ids) - 1 for w in batch)
            bar.update((seen if by_tokens else min(read[0], total)) - bar.n)
            bar.set_postfix_str(f"{seen / max(time.perf_counter() - t_start, 1e-9):.0f} tok/s", refresh=False)
            if i % world != rank or i < done:
                continue
            # Padding beyond the batch's longest window is cut (causal attention: nothing else changes); a
            # batch has the same shape on whichever process runs it. Orders use the full seq_len.
            S = max(len(w.ids) for w in batch)
            ids = torch.full((len(batch), S), pad, dtype=torch.long)
            valid = torch.zeros(len(batch), S, dtype=torch.bool)
            for b, w in enumerate(batch):
                ids[b, : len(w.ids)] = torch.tensor(w.ids)
                valid[b, 1 : len(w.ids)] = True
            ids, valid = ids.to(device), valid.to(device)
            acts = _activations(hf, arch, tc, ids, valid, timings)
            t0 = time.perf_counter()
            tokens = torch.where(valid | (torch.arange(S, device=device) == 0), ids, -1)
            window_ids = torch.tensor([w.id for w in batch], device=device)
            everything.update(torch.cat(acts, -1), tokens, window_ids, 0, cfg.seq_len)
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings["bookkeeping"] += time.perf_counter() - t0
            n = int(valid.sum())
            n_tokens += n
            new_tokens += n
            batches_here += 1
            header = dict(_header(cfg, names, tc, source, prev), batches_done=i + 1, n_tokens=n_tokens,
                          new_tokens=new_tokens)  # fmt: skip
            if stop_after is not None and batches_here >= stop_after:
                _save_state(partial_path, everything.split(widths), header)
                stopped = True
                break
            if cfg.checkpoint_every and batches_here % cfg.checkpoint_every == 0:
                _save_state(partial_path, everything.split(widths), header)
    bar.close()
    stats = everything.split(widths)
    if stopped:
        return BuildResult(None, n_tokens, new_tokens, time.perf_counter() - start, timings)
    if i < 0 or (base_windows == total_windows):
        raise ValueError(f"{data} holds no tokens once tokenized")
    if world > 1:
        gathered = [None] * world if rank == 0 else None
        payload = ({k: v.cpu() for l, s in enumerate(stats) for k, v in s.tensors(l).items()}, n_tokens, new_tokens)
        dist.gather_object(payload, gathered, dst=0)
        if rank == 0:
            for tensors, n, m in gathered[1:]:
                for l, s in enumerate(stats):
                    s.merge(LayerStats.from_tensors(tensors, l, cfg).to(device))
                n_tokens += n
                new_tokens += m
    if rank == 0:
        if n_tokens < cfg.seq_len and prev is None:
            raise ValueError(
                f"{data} holds {n_tokens} tokens, fewer than one context window of {cfg.seq_len}: too little text "
                "for dashboards; add text (or lower --seq-len)"
            )
        header = dict(_header(cfg, names, tc, source, prev), n_tokens=n_tokens, n_windows=total_windows,
                      sources=(prev["sources"] if prev else []) + [source], build_id=uuid.uuid4().hex)  # fmt: skip
        _finish(out, stats, header, hf, arch, tc, tok, cfg, names)
        if cfg.keep_state:
            _save_state(state_path, stats, header)
    if world > 1:
        dist.barrier()
    partial_path.unlink(missing_ok=True)
    partial_path.with_suffix(".json").unlink(missing_ok=True)
    if rank == 0 and (out / PARTIAL).is_dir() and not any((out / PARTIAL).iterdir()):
        (out / PARTIAL).rmdir()
    return BuildResult(out if rank == 0 else None, n_tokens, new_tokens, time.perf_counter() - start, timings)


def _header(cfg, names, tc, source, prev) -> dict:
    return {"format": FORMAT + "-state", "version": VERSION, "config": cfg.result_keys(), **names,
            "kind": tc.kind, "n_layers": tc.n_layers, "widths": [tc.width(l) for l in range(tc.n_layers)],
            "source": source, "base_build": prev["build_id"] if prev else None}  # fmt: skip


def _db_build_id(out: Path) -> str | None:
    from .store import Dashboards

    try:
        return Dashboards(out).info.get("build_id")
    except (FileNotFoundError, ValueError):
        return None


def _finish(out: Path, stats, header: dict, hf, arch, tc, tok, cfg, names) -> Path:
    """Effects from the weights, then the dashboards file (atomic)."""
    from ...models.weights import read_weights
    from .effects import layer_effects

    weights = read_weights(hf, arch, torch.float32, tc.device)
    layers = []
    for l, s in enumerate(stats):
        eff = layer_effects(weights, tc, l, cfg.n_logits, cfg.n_logits_per_layer, cfg.n_inputs)
        layers.append((s.to("cpu"), eff))
    cache: dict[int, str] = {}

    def decode(i: int) -> str:
        if i not in cache:
            cache[i] = tok.decode([i])
        return cache[i]

    info = {k: header[k] for k in ("model", "transcoders", "kind", "n_layers", "widths", "n_tokens", "n_windows",
                                   "sources", "build_id")}  # fmt: skip
    info |= {
        "config": cfg.to_json() | {"tokens": None},
        "bos": _bos(tok),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return write_dashboards(out, info, layers, decode)
