"""Peak memory and time of each step on a graph: attribute, scores, prune, save, load.

    python bench/graph_memory.py --size big --kind plt [--edge-budget 0.001]

Uses the fixtures of bench/make_fixtures.py (bench/work/<size>). Each step's peak is the rise of
the process's resident high-water mark (VmHWM, reset before the step through
/proc/self/clear_refs, Linux only) above the resident set at its start, so the model's own
memory is not counted; the last column is the graph's edge storage. Run it as its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure(name: str, fn):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    start = _status("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    peak = _status("VmHWM") - start
    print(f"{name:<10} {wall:8.2f} s   peak +{peak / 2**20:8.0f} MiB", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="big")
    ap.add_argument("--kind", default="plt", choices=["plt", "clt"])
    ap.add_argument("--edge-budget", type=float, default=None)
    args = ap.parse_args()

    import torch

    from circuit_atlas import ReplacementModel, attribute
    from circuit_atlas.graph import Graph

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", min(2, os.cpu_count() or 1))))
    root = BENCH / "work" / args.size
    manifest = json.loads((root / "manifest.json").read_text())
    spec = manifest["kinds"][args.kind]
    model = ReplacementModel.from_pretrained(root / manifest["model_dir"], str(root / spec["atlas"]))
    ids = torch.tensor(manifest["input_ids"], dtype=torch.long)
    attribute(model, ids[:4], progress=False)  # warm-up
    kwargs = {} if args.edge_budget is None else {"edge_budget": args.edge_budget}

    graph = measure("attribute", lambda: attribute(model, ids, progress=False, **kwargs))
    nnz = graph.n_edges
    dense = 4 * len(graph.row_nodes) * (graph.n_nodes - graph.n_logits)
    print(f"graph: {graph.n_nodes} nodes, {len(graph.row_nodes)} rows, {nnz:,} edges; "
          f"dense rows x sources float32 {dense / 2**20:.0f} MiB, sparse {nnz * 8 / 2**20:.0f} MiB")  # fmt: skip
    measure("scores", graph.scores)
    measure("prune", graph.prune)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "g.safetensors")
        measure("save", lambda: graph.save(path))
        print(f"file: {os.path.getsize(path) / 2**20:.0f} MiB")
        graph = None  # freed before loading, so the load's peak is its own
        measure("load", lambda: Graph.load(path))


if __name__ == "__main__":
    main()
