"""The physical floor of an attribution run: the FLOPs of the one unavoidable computation, divided by
this machine's measured matmul throughput.

    python bench/floor.py --size big --kind plt     # prints FLOPs, GFLOP/s and the floor in seconds

Every row of the graph (a feature's encoder direction at (layer l, position p), or a logit direction at
(L, T-1)) is one vector-Jacobian product of the frozen, linear replacement model, restricted to its
causal cone: attention layers 0..l at positions <= p (the feature reads resid_mid, after layer l's
attention), then a dot product with every source writing into that cone. Per row (d = d_model,
H = heads, Hkv = key/value heads, e = d / H, P = p + 1 positions, n = attention layers in the cone):

    attention, per layer:   P * 2 * d * d            (W_O^T)
                          + P * 2 * d * Hkv * e      (W_V^T)
                          + P(P+1)/2 * 2 * H * e     (pattern^T, the causal triangle)
    sources:                2 * d per (source, decoder) pair in the cone: features at layers < l and
                            positions <= p (a CLT feature at layer j has l - j decoders there), errors
                            l * P, embeddings P

The norms' frozen scales and the encoder dot products are elementwise or O(d) and left out; so is
everything a real engine adds (batching, sparsity bookkeeping), which is why this is a floor.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent


def row_flops(
    cfg: dict, kind: str, features: torch.Tensor, T: int, n_logits: int, rows: torch.Tensor | None = None
) -> float:
    """FLOPs of the rows of the active features `rows` (default all of `features`; (A, 2+) int: layer,
    position, ...) and of n_logits logits; every active feature in `features` is a source."""
    d, H, Hkv, L = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["n_layers"]
    e = d // H
    fl, fp = features[:, 0].long(), features[:, 1].long()
    # count[j, q]: active features at layer j, position q; cum[j, p] = features at layer j, positions <= p
    count = torch.zeros(L, T, dtype=torch.float64)
    count.index_put_((fl, fp), torch.ones(len(fl), dtype=torch.float64), accumulate=True)
    cum = count.cumsum(1)  # (L, T)
    # src[l, p]: (source, decoder) pairs below layer l at positions <= p (a CLT feature at j: l - j decoders)
    src = torch.zeros(L + 1, T, dtype=torch.float64)
    for l in range(1, L + 1):
        w = torch.arange(l, 0, -1, dtype=torch.float64) if kind == "clt" else torch.ones(l, dtype=torch.float64)
        src[l] = (cum[:l] * w[:, None]).sum(0)
    P = torch.arange(1, T + 1, dtype=torch.float64)  # positions in the cone of a row at p = 0..T-1
    attn_layer = P * 2 * d * d + P * 2 * d * Hkv * e + P * (P + 1) / 2 * 2 * H * e  # (T,)

    def cost(layer: torch.Tensor, pos: torch.Tensor, n_attn: torch.Tensor) -> float:
        Pp = P[pos]
        sources = src[layer, pos] + layer.double() * Pp + Pp  # features + errors + embeddings
        return float((n_attn.double() * attn_layer[pos] + 2 * d * sources).sum())

    if rows is not None:  # under max_feature_nodes only the chosen features have rows
        fl, fp = rows[:, 0].long(), rows[:, 1].long()
    total = cost(fl, fp, fl + 1)
    lt = torch.full((n_logits,), L, dtype=torch.long)
    total += cost(lt, torch.full((n_logits,), T - 1, dtype=torch.long), torch.full((n_logits,), L))
    return total


def matmul_gflops(d: int, rows: int = 256 * 32, repeats: int = 20) -> float:
    """Sustained fp32 GFLOP/s of (rows, d) @ (d, d), the shape of a batch of rows through W_O^T."""
    x, w = torch.randn(rows, d), torch.randn(d, d)
    for _ in range(3):
        x @ w
    t0 = time.perf_counter()
    for _ in range(repeats):
        x @ w
    return 2 * rows * d * d * repeats / (time.perf_counter() - t0) / 1e9


def floor_for(size: str, kind: str, ours_stem: str | None = None, gflops: float | None = None) -> dict:
    """FLOPs and floor seconds of the graph of fixture `size` (ours_<stem>.safetensors: its active features
    are the sources, the features it has rows for are the rows)."""
    from safetensors.torch import load_file

    root = BENCH / "work" / size
    manifest = json.loads((root / "manifest.json").read_text())
    t = load_file(str(root / f"ours_{ours_stem or kind}.safetensors"))
    A = t["features"].shape[0]
    rows = t["features"][t["row_nodes"][t["row_nodes"] < A]] if "row_nodes" in t else None
    flops = row_flops(manifest["config"], kind, t["features"], int(t["input_ids"].shape[0]), len(t["logit_ids"]), rows)
    g = gflops if gflops is not None else matmul_gflops(manifest["config"]["d_model"])
    return {"tflop": flops / 1e12, "gflops": g, "floor_s": flops / (g * 1e9)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="big")
    ap.add_argument("--kind", default="plt", choices=["plt", "clt"])
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", min(2, os.cpu_count() or 1))))
    f = floor_for(args.size, args.kind)
    print(
        f"{args.size} {args.kind.upper()}: {f['tflop']:.2f} TFLOP at {f['gflops']:.0f} GFLOP/s -> floor {f['floor_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
