"""Run circuit-tracer 0.5.0 (the benchmark reference) on one fixture, offline.

Executed by bench/.venv-ct/bin/python (see setup_circuit_tracer.sh), never by circuit-atlas:

    bench/.venv-ct/bin/python bench/run_circuit_tracer.py --size small --kind plt

Loads the fixture model with the TransformerLens backend (with TL's official-name lookup patched to
pass unknown names, i.e. our local directory, through) and the transcoders from circuit-tracer's
own cache layout (CIRCUIT_TRACER_CACHE_DIR), runs one warm-up attribute() on a short prefix, then
the measured

    attribute(input_ids, model, max_n_logits=10, desired_logit_prob=0.95, batch_size=256,
              max_feature_nodes=None)   # or --max-feature-nodes K

and writes bench/work/<size>/ct_<stem>.safetensors (adjacency + node tables) and ct_<stem>.json
(<stem> = <kind>, or <kind>_m<K> under --max-feature-nodes K)
(timings, memory, counts). No pickle.
"""

from __future__ import annotations

import argparse
import gc
import json
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


def rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def hwm_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) so the next reading covers attribute() only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def log(msg: str) -> None:
    print(f"[circuit-tracer] {msg}", flush=True)


def stem(kind: str, max_feature_nodes: int | None) -> str:
    """File stem of one case's outputs: `plt`, or `plt_m2048` under max_feature_nodes=2048."""
    return kind if max_feature_nodes is None else f"{kind}_m{max_feature_nodes}"


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
    ap.add_argument("--verbose", action="store_true", help="circuit-tracer's own phase logging")
    args = ap.parse_args()

    root = BENCH / "work" / args.size
    manifest = json.loads((root / "manifest.json").read_text())
    spec = manifest["kinds"][args.kind]
    os.environ["CIRCUIT_TRACER_CACHE_DIR"] = str(root / spec["ct_cache"])

    t_import = time.time()
    import torch
    import transformer_lens.loading_from_pretrained as tl_loading

    # TransformerLens refuses names outside its official list; pass unknown ones (our local
    # directory) through so it reads the directory with AutoConfig + its generic Llama converter.
    _official = tl_loading.get_official_model_name

    def _official_or_passthrough(name: str) -> str:
        try:
            return _official(name)
        except ValueError:
            return name

    tl_loading.get_official_model_name = _official_or_passthrough

    import circuit_tracer
    from circuit_tracer import ReplacementModel, attribute
    from circuit_tracer.utils.hf_utils import load_transcoder_from_hub

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", min(2, os.cpu_count() or 1))))
    log(
        f"imported circuit-tracer in {time.time() - t_import:.1f}s (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)"
    )

    t0 = time.time()
    transcoders, _ = load_transcoder_from_hub(spec["ct_ref"], device=torch.device("cpu"), dtype=torch.float32)
    model_dir = str(root / manifest["model_dir"])
    if any(word in model_dir.lower() for word in ("llama", "gemma")):
        # TransformerLens routes any name containing these to its hard-coded configs (§12):
        # hand it a neutral symlink instead.
        import tempfile

        link = Path(tempfile.mkdtemp(prefix="ctbench-")) / "model"
        link.symlink_to(model_dir, target_is_directory=True)
        log(f"model path contains 'llama'/'gemma'; loading it through the symlink {link}")
        model_dir = str(link)
    model = ReplacementModel.from_pretrained_and_transcoders(
        model_name=model_dir,
        transcoders=transcoders,
        backend="transformerlens",
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    load_s = time.time() - t0
    log(f"loaded model + {args.kind.upper()} transcoders in {load_s:.1f}s, RSS {rss_gb():.2f} GB")

    input_ids = torch.tensor(manifest["input_ids"], dtype=torch.long)

    # Same model as the fixture's HF forward? (TL re-implements Llama; a silent config drift,
    # e.g. rope base or a norm gain, would make the comparison meaningless.)
    from safetensors.torch import load_file

    ref = load_file(str(root / manifest["reference"]))
    with torch.no_grad():
        tl_logits = model(input_ids[None])[0].float()
    logit_err = float((tl_logits - ref["logits"]).abs().max() / ref["logits"].abs().max())
    log(f"TransformerLens logits vs the fixture's HF logits: max rel diff {logit_err:.2e}")
    if logit_err > 1e-4:
        why = f"TransformerLens does not reproduce the fixture model (max rel. logit diff {logit_err:.2e})"
        err = root / f"ct_{stem(args.kind, args.max_feature_nodes)}.error.json"
        err.write_text(json.dumps({"error": why, "fixtures_created": manifest["created"]}))
        raise SystemExit(why)
    kwargs = dict(
        max_n_logits=10,
        desired_logit_prob=0.95,
        batch_size=args.batch_size,
        max_feature_nodes=args.max_feature_nodes,
    )

    warm_s = None
    if not args.no_warmup:
        t0 = time.time()
        attribute(input_ids[: min(4, len(input_ids))], model, **kwargs)
        warm_s = time.time() - t0
        log(f"warm-up attribute() on {min(4, len(input_ids))} tokens: {warm_s:.2f}s")

    rss_before = rss_gb()
    load_before = os.getloadavg()
    hwm_reset = reset_hwm()
    log(f"attribute() on {len(input_ids)} tokens, batch_size {args.batch_size} ...")
    walls, peaks = [], []
    graph = None
    for _ in range(max(1, args.repeats)):
        # The previous call's graph is dropped first and the kernel's peak counter reset, so each call's
        # peak is its own (model and transcoders included), not inflated by the graph before it.
        graph = None
        gc.collect()
        hwm_reset = reset_hwm()
        t0 = time.time()
        graph = attribute(input_ids, model, verbose=args.verbose, **kwargs)
        walls.append(time.time() - t0)
        peaks.append(hwm_gb() if hwm_reset else float("nan"))
    wall = sorted(walls)[len(walls) // 2]
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GB, the whole process
    attr_peak = max(peaks)
    peak = attr_peak if attr_peak == attr_peak else maxrss  # per-call peak; ru_maxrss if no reset (NaN)
    log(f"attribute() took {wall:.2f}s; peak RSS {peak:.2f} GB (during attribute {attr_peak:.2f} GB)")

    adj = graph.adjacency_matrix.float().contiguous()
    sel = graph.selected_features
    feats = graph.active_features[sel].to(torch.int64).contiguous()  # (n_sel, 3): layer, pos, feature
    acts = graph.activation_values[sel].float().contiguous()
    logit_ids = torch.tensor([t.vocab_idx for t in graph.logit_targets], dtype=torch.int64)
    L, T = model.cfg.n_layers, len(graph.input_tokens)
    n_feat, n_logit = feats.shape[0], len(logit_ids)
    assert adj.shape[0] == n_feat + L * T + T + n_logit, adj.shape
    n_edges = int((adj != 0).sum())

    from safetensors.torch import save_file

    out = root / f"ct_{stem(args.kind, args.max_feature_nodes)}"
    save_file(
        {
            "adjacency": adj,
            "features": feats,
            "activations": acts,
            "input_ids": graph.input_tokens.to(torch.int64).contiguous(),
            "logit_ids": logit_ids,
            "logit_probabilities": graph.logit_probabilities.float().contiguous(),
        },
        str(out.with_suffix(".safetensors")),
    )
    result = {
        "engine": "circuit-tracer",
        "version": circuit_tracer.__version__ if hasattr(circuit_tracer, "__version__") else "0.5.0",
        "backend": "transformerlens",
        "size": args.size,
        "kind": args.kind,
        "batch_size": args.batch_size,
        "max_feature_nodes": args.max_feature_nodes,
        "threads": torch.get_num_threads(),
        "attribute_s": wall,
        "attribute_runs_s": walls,
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
        "active_features": int(graph.active_features.shape[0]),
        "feature_nodes": n_feat,
        "error_nodes": L * T,
        "embedding_nodes": T,
        "logit_nodes": n_logit,
        "nodes": int(adj.shape[0]),
        "edges": n_edges,
        "layout": "adjacency[target, source]; nodes = features (features[i] = layer,pos,feature), "
        "errors (layer-major, L*T incl. BOS), embeddings (T), logits (logit_ids)",
        "fixtures_created": manifest["created"],
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
        "n_layers": L,
        "n_pos": T,
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    log(f"{n_feat} feature nodes, {adj.shape[0]} nodes, {n_edges} non-zero edges -> {out}.safetensors/.json")


if __name__ == "__main__":
    sys.exit(main())
