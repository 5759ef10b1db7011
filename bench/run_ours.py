"""Run circuit-atlas's attribute() on one fixture (the counterpart of run_circuit_tracer.py).

    python bench/run_ours.py --size small --kind plt

Loads the fixture model with ReplacementModel.from_pretrained and the transcoders in our format
(bench/work/<size>/atlas/<kind>, written by circuit_atlas.transcoders.io; if that copy is
missing, the bench's raw tensors are wrapped in a Transcoders directly), checks that our forward
reproduces the fixture's HF logits, runs one warm-up attribute() on a short prefix, then the measured

    attribute(model, input_ids, max_n_logits=10, desired_logit_prob=0.95, batch_size=256,
              max_feature_nodes=None)

(or --max-feature-nodes K) and writes bench/work/<size>/ours_<stem>.safetensors (node tables as in
ct_<stem>.safetensors, edges as the graph's CSR) and ours_<stem>.json, with the engine's own phase
timings. --profile cprofile|torch profiles the last measured call. Run it as its own process so peak
RSS is ours alone.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from run_circuit_tracer import hwm_gb, reset_hwm, rss_gb, stem  # noqa: E402


class PhaseLog(logging.Handler):
    """Collects the engine's own phase timings ("phase 2: feature rows: 12.3 s") of the last call."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.phases: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("phase ") and msg.endswith(" s"):
            name, _, secs = msg.rpartition(": ")
            self.phases[name] = float(secs[:-2])


def log(msg: str) -> None:
    print(f"[circuit-atlas] {msg}", flush=True)


def load_raw_transcoders(root: Path, spec: dict, manifest: dict):
    """The bench's own copy of the transcoders (keys W_enc.{l} ...), wrapped in our Transcoders."""
    from safetensors.torch import load_file

    from circuit_atlas.transcoders import Transcoders

    path = root / spec["ours"]
    meta = json.loads(path.with_suffix(".json").read_text())
    t = load_file(str(path))
    L = meta["n_layers"]
    lists = {k: [t[f"{k}.{l}"] for l in range(L)] for k in ("W_enc", "b_enc", "threshold", "W_dec", "b_dec")}
    return Transcoders(
        kind=meta["kind"],
        activation=meta["activation"],
        input_hook=meta["input_hook"],
        output_hook=meta["output_hook"],
        name=f"bench-{meta['kind']}",
        **lists,
    )


def profiled(kind: str, call):
    """Run call() under cProfile or torch.profiler; return (its result, a printable top-30 report)."""
    if kind == "cprofile":
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        result = prof.runcall(call)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
        return result, buf.getvalue()
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        result = call()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    table += "\n\n" + prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=15)
    del torch
    return result, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", required=True)
    ap.add_argument("--kind", required=True, choices=["plt", "clt"])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="measured attribute() calls; the median wall time is reported (default 1)",
    )
    ap.add_argument(
        "--max-feature-nodes", type=int, default=None, help="feature rows to compute, by influence (default: all)"
    )
    ap.add_argument(
        "--memory-budget-gb", type=float, default=None, help="the engine's memory budget (default: its own)"
    )
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--profile",
        choices=["cprofile", "torch"],
        default=None,
        help="profile the measured call: cProfile (top functions) or torch.profiler (top ops), printed and "
        "written to ours_<stem>.profile.txt",
    )
    args = ap.parse_args()

    root = BENCH / "work" / args.size
    manifest = json.loads((root / "manifest.json").read_text())
    spec = manifest["kinds"][args.kind]

    t_import = time.time()
    import torch

    import circuit_atlas
    from circuit_atlas import ReplacementModel, attribute

    if args.memory_budget_gb:  # read by the engine's budget check at each attribute()
        os.environ["CIRCUIT_ATLAS_MEMORY_BUDGET_GB"] = str(args.memory_budget_gb)

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", min(2, os.cpu_count() or 1))))
    log(
        f"imported circuit-atlas in {time.time() - t_import:.1f}s (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)"
    )

    t0 = time.time()
    atlas_dir = root / spec["atlas"] if spec.get("atlas") else None
    if atlas_dir is not None and atlas_dir.exists():
        transcoders, source = str(atlas_dir), f"our format ({spec['atlas']})"
    else:
        transcoders, source = load_raw_transcoders(root, spec, manifest), f"bench tensors ({spec['ours']})"
    model = ReplacementModel.from_pretrained(root / manifest["model_dir"], transcoders, dtype=torch.float32)
    load_s = time.time() - t0
    log(f"loaded model + {args.kind.upper()} transcoders from {source} in {load_s:.1f}s, RSS {rss_gb():.2f} GB")

    input_ids = torch.tensor(manifest["input_ids"], dtype=torch.long)
    from safetensors.torch import load_file

    ref = load_file(str(root / manifest["reference"]))
    with torch.no_grad():
        our_logits = model.logits(input_ids).float()
    logit_err = float((our_logits - ref["logits"]).abs().max() / ref["logits"].abs().max())
    log(f"our logits vs the fixture's HF logits: max rel diff {logit_err:.2e}")
    if logit_err > 1e-4:
        raise SystemExit(f"our forward does not reproduce the fixture model (rel diff {logit_err:.2e})")

    kwargs = dict(
        max_n_logits=10,
        desired_logit_prob=0.95,
        batch_size=args.batch_size,
        max_feature_nodes=args.max_feature_nodes,
    )
    warm_s = None
    if not args.no_warmup:
        t0 = time.time()
        attribute(model, input_ids[: min(4, len(input_ids))], progress=False, **kwargs)
        warm_s = time.time() - t0
        log(f"warm-up attribute() on {min(4, len(input_ids))} tokens: {warm_s:.2f}s")

    rss_before = rss_gb()
    load_before = os.getloadavg()
    hwm_reset = reset_hwm()
    log(f"attribute() on {len(input_ids)} tokens, batch_size {args.batch_size} ...")
    phases = PhaseLog()
    engine_log = logging.getLogger("circuit_atlas.attribution.attribute")
    engine_log.setLevel(logging.INFO)
    engine_log.addHandler(phases)
    walls, phase_runs, peaks = [], [], []
    graph = None
    for i in range(max(1, args.repeats)):
        # The previous call's graph is dropped first and the kernel's peak counter reset, so each call's
        # peak is its own (model and transcoders included), not inflated by the graph before it.
        graph = None
        gc.collect()
        hwm_reset = reset_hwm()
        profile_this = args.profile and i == max(1, args.repeats) - 1  # profile the last call only
        t0 = time.time()
        if profile_this:
            graph, report = profiled(args.profile, lambda: attribute(model, input_ids, progress=False, **kwargs))
        else:
            try:
                graph = attribute(model, input_ids, progress=not args.no_progress, **kwargs)
            except (MemoryError, RuntimeError, ValueError) as exc:  # e.g. the engine's own budget check refusing
                err = root / f"ours_{stem(args.kind, args.max_feature_nodes)}.error.json"
                err.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}", "tokens": len(input_ids)}))
                raise
        walls.append(time.time() - t0)
        peaks.append(hwm_gb() if hwm_reset else float("nan"))
        phase_runs.append(dict(phases.phases))
        if profile_this:
            prof_path = root / f"ours_{stem(args.kind, args.max_feature_nodes)}.profile.txt"
            prof_path.write_text(report)
            print(report, flush=True)
    wall = sorted(walls)[len(walls) // 2]
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GB, the whole process
    attr_peak = max(peaks)
    peak = attr_peak if attr_peak == attr_peak else maxrss  # per-call peak; ru_maxrss if no reset (NaN)
    log(f"attribute() took {wall:.2f}s; peak RSS {peak:.2f} GB (during attribute {attr_peak:.2f} GB)")

    from circuit_atlas.graph.graph import EMBEDDING, ERROR, FEATURE, LOGIT

    kind = graph.kind
    feat = kind == FEATURE
    feats = torch.stack([graph.layer[feat], graph.position[feat], graph.feature[feat]], 1).to(torch.int64).contiguous()
    errs = torch.stack([graph.layer[kind == ERROR], graph.position[kind == ERROR]], 1).to(torch.int64).contiguous()
    n_edges = graph.n_edges

    from safetensors.torch import save_file

    out = root / f"ours_{stem(args.kind, args.max_feature_nodes)}"
    # The edges as the graph holds them (CSR over rows; no dense N x N export: at 1,024 tokens it would not fit).
    save_file(
        {
            "row_nodes": graph.row_nodes.to(torch.int64).contiguous(),
            "edge_indptr": graph.edge_indptr.to(torch.int64).contiguous(),
            "edge_sources": graph.edge_sources.to(torch.int64).contiguous(),
            "edge_values": graph.edge_values.float().contiguous(),
            "features": feats,
            "errors": errs,
            "activations": graph.activation[feat].float().contiguous(),
            "input_ids": graph.input_ids.to(torch.int64).contiguous(),
            "logit_ids": graph.feature[kind == LOGIT].to(torch.int64).contiguous(),
            "logit_probabilities": graph.activation[kind == LOGIT].float().contiguous(),
        },
        str(out.with_suffix(".safetensors")),
    )
    result = {
        "engine": "circuit-atlas",
        "version": circuit_atlas.__version__,
        "size": args.size,
        "kind": args.kind,
        "batch_size": args.batch_size,
        "max_feature_nodes": args.max_feature_nodes,
        "threads": torch.get_num_threads(),
        "transcoders_from": source,
        "attribute_s": wall,
        "attribute_runs_s": walls,
        "phases_s": phase_runs[[i for i in range(len(walls)) if walls[i] == wall][0]],
        "phase_runs_s": phase_runs,
        "profiled": args.profile,
        "logit_check_rel_diff": logit_err,
        "warmup_s": warm_s,
        "load_s": load_s,
        "peak_rss_gb": peak,
        "attribute_peak_rss_gb": attr_peak,
        "attribute_peak_rss_runs_gb": peaks,
        "process_maxrss_gb": maxrss,
        "rss_before_attribute_gb": rss_before,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "active_features": int(feat.sum()),
        "feature_nodes": int(feat.sum()),
        "error_nodes": int((kind == ERROR).sum()),
        "embedding_nodes": int((kind == EMBEDDING).sum()),
        "logit_nodes": int((kind == LOGIT).sum()),
        "nodes": graph.n_nodes,
        "edges": n_edges,
        "rows": graph.n_rows,
        "layout": "CSR edges: row i is node row_nodes[i], its sources edge_sources[edge_indptr[i]:edge_indptr[i+1]]; "
        "nodes = features, errors (errors[i] = layer,pos; no BOS), embeddings (T), logits (logit_ids)",
        "fixtures_created": manifest["created"],
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
        "n_layers": graph.n_layers,
        "n_pos": int(graph.input_ids.shape[0]),
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    log(
        f"{result['feature_nodes']} feature nodes, {graph.n_nodes} nodes, {n_edges} non-zero edges -> {out}.safetensors/.json"
    )


if __name__ == "__main__":
    sys.exit(main())
