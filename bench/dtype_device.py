"""Dtype/device bench: the shipped toy-world model and its CLT, attributed per (device, weight dtype,
compute dtype).

    python bench/dtype_device.py [--devices cpu cuda] [--repeats 3] [--prompt TEXT]

For every combination it prints the bytes held by the model's weights (models/weights.py, shared
tensors counted once), the median attribute() wall time after one warm-up call, the graph's node
count, and the relative Frobenius distance of its adjacency to the float32 CPU graph over the nodes
both graphs have (a node present in only one of them is counted, not compared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's circuit_atlas

from circuit_atlas import ReplacementModel, attribute  # noqa: E402
from circuit_atlas.demo import PROMPT  # noqa: E402

COMBOS = [  # (weight dtype, compute dtype)
    (torch.float32, torch.float32),
    (torch.bfloat16, torch.float32),
    (torch.float16, torch.float32),
    (torch.bfloat16, torch.bfloat16),
]


def weight_bytes(model: ReplacementModel) -> int:
    w, seen, total = model.weights, set(), 0
    tensors = [w.embed, w.W_U, w.position_embed, w.b_U, w.final_norm.gain]
    for b in w.blocks:
        a = b.attn
        tensors += [a.W_Q, a.W_K, a.W_V, a.W_O, a.b_Q, a.b_K, a.b_V, a.b_O, b.ln1.gain, b.ln2.gain, *b.mlp.tensors()]
    for t in tensors:
        if t is not None and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def keys(g) -> list[tuple]:
    return list(zip(g.kind.tolist(), g.layer.tolist(), g.position.tolist(), g.feature.tolist()))


def distance(g, ref) -> tuple[float, int]:
    """(relative Frobenius distance over shared nodes, number of nodes in only one graph)."""
    kg, kr = keys(g), keys(ref)
    where = {k: i for i, k in enumerate(kg)}
    shared = [(where[k], i) for i, k in enumerate(kr) if k in where]
    gi = torch.tensor([a for a, _ in shared])
    ri = torch.tensor([b for _, b in shared])
    A = g.adjacency.double()[gi][:, gi]
    B = ref.adjacency.double()[ri][:, ri]
    return float((A - B).norm() / B.norm()), len(kg) + len(kr) - 2 * len(shared)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", nargs="+", default=["cpu"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt", default=PROMPT)
    args = ap.parse_args()
    ref = None
    print(f"{'device':<6} {'weights':<9} {'compute':<9} {'weight MiB':>10} {'attribute s':>11} {'nodes':>6} "
          f"{'rel. dist':>9} {'unshared':>8}")  # fmt: skip
    for device in args.devices:
        for wdt, cdt in COMBOS:
            if device == "cpu" and cdt == torch.float16:
                continue
            model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt", dtype=wdt, compute_dtype=cdt,
                                                     device=device)  # fmt: skip
            attribute(model, args.prompt.split()[0] + " " + args.prompt.split()[1], progress=False)  # warm-up
            times = []
            for _ in range(args.repeats):
                sync(device)
                t0 = time.perf_counter()
                graph = attribute(model, args.prompt, progress=False)
                sync(device)
                times.append(time.perf_counter() - t0)
            if ref is None:
                ref = graph
            rel, unshared = distance(graph, ref)
            name = lambda d: str(d).removeprefix("torch.")  # noqa: E731
            print(f"{device:<6} {name(wdt):<9} {name(cdt):<9} {weight_bytes(model) / 2**20:>10.2f} "
                  f"{statistics.median(times):>11.3f} {graph.n_nodes:>6} {rel:>9.2e} {unshared:>8}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
