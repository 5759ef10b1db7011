"""trace-batch on 1 rank against N ranks (torchrun, gloo on the CPU) on the toy world.

    python bench/trace_batch.py [--prompts 24] [--ranks 2] [--threads 1]

Writes N two-hop prompts ("The capital of the state containing CITY is", every city of the toy world in
turn), runs `python -m circuit_atlas trace-batch` once in one process and once under
`torchrun --standalone --nproc_per_node RANKS`, each into a fresh folder, and prints per run: the wall time
of the whole command (start-up and model loading included), the time spent tracing (the sum of the
manifest's per-prompt seconds, per rank), prompts per second, and whether every graph of the two runs is
the same bit for bit (nodes, CSR edges, metadata but for its timings; --threads per process on both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--model", "toyworld", "--transcoders", "toyworld-clt", "--no-progress"]


def prompts(n: int) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from circuit_atlas.toyworld.world import all_cities

    cities = [city for city, _ in all_cities()]
    return [f"The capital of the state containing {cities[i % len(cities)]} is" for i in range(n)]


def run(command: list[str], threads: int) -> float:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="")
    t = time.perf_counter()
    r = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def report(name: str, wall: float, out: Path) -> dict[str, str]:
    data = json.loads((out / "manifest.json").read_text())
    per_rank: dict[int, float] = {}
    for g in data["graphs"]:
        per_rank[g["rank"]] = per_rank.get(g["rank"], 0.0) + g["seconds"]
    n = len(data["graphs"])
    busiest = max(per_rank.values())
    ranks = ", ".join(f"rank {r}: {s:.1f} s" for r, s in sorted(per_rank.items()))
    print(f"{name:>9}: {n} graphs ({data['counts']['failed']} failed), command {wall:.1f} s, tracing {busiest:.1f} s "
          f"on the busiest rank ({ranks}); {n / busiest:.2f} prompts/s tracing, {n / wall:.2f} prompts/s overall")  # fmt: skip
    return data


def same_graphs(a: Path, b: Path, files: list[str]) -> bool:
    import torch

    from circuit_atlas.graph import Graph

    for name in files:
        x, y = Graph.load(str(a / name)), Graph.load(str(b / name))
        tensors = ("input_ids", "kind", "layer", "position", "feature", "activation", "row_nodes", "edge_indptr",
                   "edge_sources", "edge_values")  # fmt: skip
        if not all(torch.equal(getattr(x, t), getattr(y, t)) for t in tensors):
            return False
        untimed = [{k: v for k, v in g.metadata.items() if not k.endswith("_seconds")} for g in (x, y)]
        if untimed[0] != untimed[1] or x.prompt != y.prompt:
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=24, help="how many prompts [24]")
    ap.add_argument("--ranks", type=int, default=2, help="torchrun ranks (processes) [2]")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process, both runs [1]")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        file = tmp / "prompts.txt"
        file.write_text("\n".join(prompts(args.prompts)) + "\n", encoding="utf-8")
        print(f"{args.prompts} toy-world prompts, {os.cpu_count()} CPU cores, {args.threads} thread(s) per process")
        single = [sys.executable, "-m", "circuit_atlas", "trace-batch", str(file), "--out", str(tmp / "one"), *MODEL]
        one = report("1 rank", run(single, args.threads), tmp / "one")
        many = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.ranks),
                "-m", "circuit_atlas", "trace-batch", str(file), "--out", str(tmp / "many"), *MODEL]  # fmt: skip
        several = report(f"{args.ranks} ranks", run(many, args.threads), tmp / "many")
        files = [g["file"] for g in one["graphs"]]
        assert files == [g["file"] for g in several["graphs"]]
        print(f"graphs identical in both runs: {same_graphs(tmp / 'one', tmp / 'many', files)}")


if __name__ == "__main__":
    main()
