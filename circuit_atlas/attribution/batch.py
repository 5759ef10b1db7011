"""`circuit-atlas trace-batch PROMPTS --out DIR`: one attribution graph per prompt, in one process or many.

Each prompt is traced exactly as `circuit-atlas trace` traces it alone (the same estimate, memory
budget and attribute() call, one prompt at a time: prompts are never padded into one batch, which
is how circuit-tracer's batched attribution came to differ from single prompts, ct#67), and saved
as DIR/<id>.safetensors. DIR then holds:

    <id>.safetensors           the graphs (Graph.save writes a temporary file and renames it)
    .trace-batch/<id>.json     one record per prompt, written after its graph: what resuming trusts
    manifest.json              {"format": "circuit-atlas-trace-batch", "version": 1, ..., "graphs": [
                                 {index, id, line, prompt, targets, file, status, seconds, sha256, error, ...}]}

Resuming: a prompt is skipped when its record says "ok", was made from the same prompt, targets,
model, transcoders, dtype and attribution settings (its `fingerprint`), and the graph file's sha256
is the recorded one. Anything else (no record, a failed one, other settings, a half-written or
changed file) is traced again. A prompt that fails is recorded with its error and the others go on.
Each rank holds DIR/.trace-batch/rank-R.lock while it runs, so two runs into one folder cannot interleave.

Under `torchrun --nproc_per_node N -m circuit_atlas trace-batch ...` every rank takes the prompts
with index % N == rank (cuda:LOCAL_RANK and NCCL when CUDA is there, else the CPU and gloo), writes
its graphs and records, and rank 0 gathers the records and writes the manifest. DIR must be one
folder all ranks see (one machine, or a shared filesystem).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .config import AttributionConfig
from .manifest import MANIFEST, MANIFEST_FORMAT, file_sha256
from .prompts import PromptSpec, read_prompts

RECORDS = ".trace-batch"
# The per-prompt records' layout; it is part of every fingerprint, so records of another layout are never trusted.
RECORD_VERSION = 1
# The gather at the end waits for the slowest rank; shards of long prompts can differ by hours.
GATHER_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class BatchSettings:
    """What a graph depends on besides its prompt (a change in any of these re-traces every prompt)."""

    model: str
    transcoders: str
    dtype: str
    config: AttributionConfig
    targets: tuple[str | int, ...] | None = None
    """targets of every prompt that names none (--target / --target-id)"""


def fingerprint(spec: PromptSpec, settings: BatchSettings) -> str:
    """sha256 of everything the graph of `spec` depends on (not edge_dir, where edges spill, nor the memory budget)."""
    config = dataclasses.asdict(settings.config)
    del config["edge_dir"], config["memory_budget_gb"]
    targets = spec.targets if spec.targets is not None else settings.targets
    key = {"record_version": RECORD_VERSION, "prompt": spec.prompt, "targets": list(targets) if targets else None,
           "model": settings.model, "transcoders": settings.transcoders, "dtype": settings.dtype, "config": config}  # fmt: skip
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()


def _write_json(path: Path, data: dict) -> None:
    """Write to a temporary name and rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def record_path(out_dir: Path, spec: PromptSpec) -> Path:
    return out_dir / RECORDS / f"{spec.id}.json"


def graph_file(out_dir: Path, spec: PromptSpec) -> Path:
    return out_dir / f"{spec.id}.safetensors"


def completed(out_dir: Path, spec: PromptSpec, key: str) -> dict | None:
    """The record of a finished, unchanged graph of this prompt and these settings, else None."""
    try:
        record = json.loads(record_path(out_dir, spec).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = graph_file(out_dir, spec)
    if record.get("status") != "ok" or record.get("fingerprint") != key or not path.is_file():
        return None
    return record if file_sha256(path) == record.get("sha256") else None


@contextlib.contextmanager
def rank_lock(out_dir: Path, rank: int):
    """Hold DIR/.trace-batch/rank-R.lock: a second run writing into the same folder stops with an error
    instead of deleting and rewriting the graphs this one is writing (released when the process ends)."""
    (out_dir / RECORDS).mkdir(parents=True, exist_ok=True)
    with open(out_dir / RECORDS / f"rank-{rank}.lock", "a+") as f:
        try:
            import fcntl
        except ImportError:  # no POSIX locks (Windows): run unguarded
            yield
            return
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another trace-batch is writing into {out_dir} (rank {rank}); wait for it to end, "
                             "or give another --out") from None  # fmt: skip
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def trace_one(model, spec: PromptSpec, settings: BatchSettings):
    """The graph of one prompt, exactly as `circuit-atlas trace` computes it (cli.run_trace)."""
    from .attribute import attribute
    from .budget import check_attribution_budget, memory_budget

    config = settings.config
    targets = list(spec.targets) if spec.targets is not None else settings.targets
    check_attribution_budget(model, spec.prompt, **config.attribute_kwargs(), memory_budget_gb=config.memory_budget_gb)
    with memory_budget(config.memory_budget_gb):
        return attribute(model, spec.prompt, targets=list(targets) if targets else None, progress=False,
                         **config.attribute_kwargs())  # fmt: skip


def run_shard(model, specs: list[PromptSpec], out_dir: Path, settings: BatchSettings, *, rank: int = 0,
              progress: bool = True, desc: str = "trace-batch") -> list[dict]:  # fmt: skip
    """Trace (or reuse) every prompt of `specs` into out_dir; returns one record per prompt."""
    (out_dir / RECORDS).mkdir(parents=True, exist_ok=True)
    records = []
    bar = tqdm(specs, desc=desc, unit="prompt", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for spec in bar:
        key = fingerprint(spec, settings)
        done = completed(out_dir, spec, key)
        if done is not None:
            # Its place may have moved (JSON lines with ids): the manifest lists it where it is now.
            records.append(done | {"index": spec.index, "line": spec.line, "reused": True})
            continue
        path = graph_file(out_dir, spec)
        # No record and no graph of other settings outlives this attempt, whatever happens below.
        record_path(out_dir, spec).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        targets = spec.targets if spec.targets is not None else settings.targets
        record = {"index": spec.index, "id": spec.id, "line": spec.line, "prompt": spec.prompt,
                  "targets": list(targets) if targets else None, "file": path.name, "rank": rank,
                  "fingerprint": key}  # fmt: skip
        t = time.perf_counter()
        try:
            graph = trace_one(model, spec, settings)
            graph.save(str(path))
            record |= {"status": "ok", "sha256": file_sha256(path), "n_nodes": graph.n_nodes,
                       "n_edges": graph.n_edges, "attribution_seconds": graph.metadata["attribution_seconds"]}  # fmt: skip
        except Exception as exc:  # one bad prompt (too long, a target that splits, out of memory) stops no other
            path.unlink(missing_ok=True)
            record |= {"status": "failed", "file": None, "error": f"{type(exc).__name__}: {exc}"}
            tqdm.write(f"trace-batch: prompt {spec.id} (line {spec.line}) failed: {record['error']}", file=sys.stderr)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        record["seconds"] = time.perf_counter() - t
        _write_json(record_path(out_dir, spec), record)
        records.append(record | {"reused": False})
        bar.set_postfix_str(f"{spec.id} {record['seconds']:.1f} s")
    bar.close()
    return records


def manifest(specs: list[PromptSpec], records: list[dict], settings: BatchSettings, prompts_file: str,
             world_size: int) -> dict:  # fmt: skip
    """The manifest: every prompt exactly once, in file order."""
    by_index = {}
    for r in records:
        if r["index"] in by_index:
            raise RuntimeError(f"prompt {r['index']} was traced by two ranks; the sharding is broken")
        by_index[r["index"]] = r
    missing = [s.index for s in specs if s.index not in by_index]
    if missing:
        raise RuntimeError(f"no rank traced prompts {missing[:10]}; the sharding is broken")
    graphs = [by_index[s.index] for s in specs]
    counts = {"ok": sum(r["status"] == "ok" for r in graphs), "failed": sum(r["status"] == "failed" for r in graphs),
              "reused": sum(bool(r.get("reused")) for r in graphs)}  # fmt: skip
    return MANIFEST_FORMAT | {
        "prompts_file": str(prompts_file), "model": settings.model, "transcoders": settings.transcoders,
        "dtype": settings.dtype, "settings": dataclasses.asdict(settings.config),
        "targets": list(settings.targets) if settings.targets else None, "world_size": world_size,
        "written": time.time(), "counts": counts, "graphs": graphs,
    }  # fmt: skip


# --- ranks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch (RANK, WORLD_SIZE, LOCAL_RANK; 0, 1, 0 when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    torchrun: bool = False
    """started by torchrun (LOCAL_RANK set), even with one rank: then it takes cuda:0 when there is a GPU"""

    @classmethod
    def from_env(cls) -> Launch:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                   int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", 1))), "LOCAL_RANK" in env)  # fmt: skip

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, specs: list[PromptSpec]) -> list[PromptSpec]:
        """Deterministic: prompt i goes to rank i % world_size (the same split on every re-run)."""
        return [s for s in specs if s.index % self.world_size == self.rank]


def rank_device(requested: str | None, launch: Launch) -> str | None:
    """The device of this rank: cuda:LOCAL_RANK under torchrun when CUDA is there, else what was asked."""
    if not launch.torchrun:
        return requested
    if launch.distributed and requested and requested.startswith("cuda:"):
        raise ValueError(f"--device {requested} under torchrun would put every rank on one GPU; give --device cuda "
                         "(or leave it out): rank r takes cuda:LOCAL_RANK")  # fmt: skip
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no GPU here; leave --device out to run the ranks on the CPU")
    if requested not in (None, "cuda") or not torch.cuda.is_available():
        return requested  # the CPU (gloo)
    if launch.local_world_size > torch.cuda.device_count():
        raise ValueError(f"{launch.local_world_size} ranks on this machine but {torch.cuda.device_count()} GPU(s); "
                         f"use torchrun --nproc_per_node {torch.cuda.device_count()}")  # fmt: skip
    return f"cuda:{launch.local_rank}"


def init_ranks(launch: Launch, device: str | None) -> None:
    import torch.distributed as dist

    if device and device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl", timeout=GATHER_TIMEOUT, device_id=torch.device(device))
    else:
        dist.init_process_group("gloo", timeout=GATHER_TIMEOUT)


def gather_records(records: list[dict], launch: Launch) -> list[dict] | None:
    """Every rank's records on rank 0 (None elsewhere); it doubles as the barrier before the manifest."""
    if not launch.distributed:
        return records
    import torch.distributed as dist

    parts = [None] * launch.world_size if launch.rank == 0 else None
    dist.gather_object(records, parts, dst=0)
    return [r for part in parts for r in part] if launch.rank == 0 else None


# --- the command ---------------------------------------------------------------------------------
def add_parser(sub) -> None:
    from ..cli import _add_model_args, _id_target, _text_target, add_config_arguments
    from .config import field_docs

    p = sub.add_parser(
        "trace-batch",
        help="trace one attribution graph per prompt of a file (resumable; many GPUs under torchrun)",
        description="Trace every prompt of PROMPTS_FILE into DIR/<id>.safetensors, each graph exactly the one "
        "`trace` writes for that prompt alone, with DIR/manifest.json listing prompt, file, status, seconds and "
        "sha256 (failures with their error). Re-running skips the graphs already complete. Under "
        "`torchrun --nproc_per_node N -m circuit_atlas trace-batch ...` the prompts are split across the ranks "
        "(prompt i on rank i % N; one rank per GPU). `circuit-atlas serve --import DIR` puts the graphs in the "
        "graph library. Exit status 0: every graph is there; 1: some prompts failed (listed, and in the manifest); "
        "2: bad input.",
    )
    p.add_argument("prompts_file", metavar="PROMPTS_FILE", help='one prompt per line (.txt), or JSON lines (.jsonl) '
                   'of {"prompt": ..., "id": ..., "target": ...} ("id" names the file; "target": text or id)')  # fmt: skip
    _add_model_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the graphs and manifest.json")
    p.add_argument(
        "--target", dest="targets", action="append", type=_text_target, metavar="TEXT",
        help="explain this token in every prompt whose line names no target (its text, one token); repeatable",
    )  # fmt: skip
    p.add_argument("--target-id", dest="targets", action="append", type=_id_target, metavar="ID",
                   help="the same by vocabulary id; repeatable, mixes with --target")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_config_arguments(p, AttributionConfig, field_docs(), "attribution settings (AttributionConfig)")
    p.set_defaults(func=cmd_trace_batch)


def _print_summary(data: dict, out_dir: Path, seconds: float) -> None:
    c, n = data["counts"], len(data["graphs"])
    print(f"trace-batch: {c['ok']} of {n} graphs in {out_dir} ({c['ok'] - c['reused']} traced, {c['reused']} already "
          f"done, {c['failed']} failed) in {seconds:.1f} s on {data['world_size']} rank(s); manifest "
          f"{out_dir / MANIFEST}")  # fmt: skip
    for r in data["graphs"]:
        if r["status"] == "failed":
            print(f"  failed: {r['id']} (line {r['line']}): {r['error']}")


def cmd_trace_batch(args) -> int:
    from ..cli import DTYPES, config_from_args, parse_targets

    config = config_from_args(AttributionConfig, args)  # bad settings and a bad file fail before the model loads
    specs = read_prompts(args.prompts_file)
    targets = parse_targets(args.targets)
    settings = BatchSettings(args.model, args.transcoders, DTYPES[args.dtype], config,
                             tuple(targets) if targets else None)  # fmt: skip
    launch = Launch.from_env()
    args.device = rank_device(args.device, launch)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if launch.distributed:
        init_ranks(launch, args.device)
    try:
        with rank_lock(out_dir, launch.rank):
            return _run(args, specs, settings, launch, out_dir)
    finally:
        if launch.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(args, specs: list[PromptSpec], settings: BatchSettings, launch: Launch, out_dir: Path) -> int:
    """This rank's shard, then (rank 0) the manifest; the exit status."""
    from ..cli import _load_model, _status

    mine = launch.shard(specs)
    model = _load_model(args)
    t = time.perf_counter()
    where = f"rank {launch.rank} of {launch.world_size}, " if launch.distributed else ""
    _status(f"trace-batch: {where}{len(mine)} of {len(specs)} prompts into {out_dir}")
    desc = f"trace-batch rank {launch.rank}" if launch.distributed else "trace-batch"
    records = run_shard(model, mine, out_dir, settings, rank=launch.rank, desc=desc,
                        progress=not args.no_progress and launch.rank == 0)  # fmt: skip
    everything = gather_records(records, launch)
    failed = 0
    if everything is not None:  # rank 0, or the only process
        data = manifest(specs, everything, settings, args.prompts_file, launch.world_size)
        _write_json(out_dir / MANIFEST, data)
        _print_summary(data, out_dir, time.perf_counter() - t)
        failed = data["counts"]["failed"]
    if launch.distributed:
        import torch.distributed as dist

        dist.barrier()  # every rank exits after the manifest exists
    return 1 if failed else 0
