"""Dashboard build speed and memory on the toy world (measured, printed; never asserted).

    python bench/features.py [--sentences 2000] [--scale 10] [--kinds plt clt] [--device cpu]
    python bench/features.py --distributed [--sentences 2000]   # torchrun 2 processes vs 1

For each transcoder set: tokens/s of one build, and how the time splits between the model forward,
the encoders and the bookkeeping (the running top-k / sample / histogram updates). Then the peak
memory (max RSS of a fresh process, and the size of the running state) of a build on the corpus
and on `scale` times the corpus: the state is fixed by the settings, so the peak must not grow.
Every build runs in its own process, so one's memory never counts toward another's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from circuit_atlas.features.dashboards import BuildConfig, build_dashboards
kind, data, out, device = sys.argv[1:5]
r = build_dashboards("toyworld", f"toyworld-{kind}", data, out, BuildConfig(device=device, keep_state=True),
                     progress=False)
import os
state = os.path.getsize(os.path.join(out, "state.safetensors"))
db = os.path.getsize(os.path.join(out, "dashboards.sqlite"))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"tokens": r.n_tokens, "seconds": r.seconds, "timings": r.timings, "max_rss_mb": rss,
                  "state_mb": state / 2**20, "db_mb": db / 2**20}))
"""


def run(kind: str, data: Path, out: Path, device: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(data), str(out), device], capture_output=True,
                          text=True, env=env, check=True)  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def distributed(data: Path, tmp: Path, kind: str = "plt") -> None:
    """A 2-process torchrun (gloo) build against the single-process one: how equal the states are."""
    import torch
    from safetensors.torch import load_file

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    common = ["build", "--model", "toyworld", "--transcoders", f"toyworld-{kind}", "--data", str(data), "--no-progress"]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                    "circuit_atlas.features", *common, "--out", str(tmp / "ddp")], env=env, check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "circuit_atlas.features", *common, "--out", str(tmp / "one")], env=env,
                   check=True, capture_output=True)  # fmt: skip
    a, b = load_file(str(tmp / "ddp" / "state.safetensors")), load_file(str(tmp / "one" / "state.safetensors"))
    exact = [k for k in a if torch.equal(a[k], b[k])]
    worst = max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()
                 and torch.isfinite(a[k]).all()), default=0.0)  # fmt: skip
    print(f"distributed ({kind.upper()}, 2 gloo processes vs 1): {len(exact)} of {len(a)} state tensors bit-identical; "
          f"integer tensors (counts, histograms, chosen windows, contexts) identical: "
          f"{all(torch.equal(a[k], b[k]) for k in a if not a[k].is_floating_point())}; "
          f"largest float difference {worst:.3g}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sentences", type=int, default=2000, help="documents in the 1x corpus [2000]")
    p.add_argument("--scale", type=int, default=10, help="the larger corpus is this many times the first [10]")
    p.add_argument("--kinds", nargs="+", default=["plt", "clt"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--distributed", action="store_true", help="compare a 2-process torchrun build with one process")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from circuit_atlas.toyworld.corpus import write_corpus

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, large = tmp / "1x.txt", tmp / f"{args.scale}x.txt"
        write_corpus(small, seed=11, n_sentences=args.sentences)
        if args.distributed:
            distributed(small, tmp)
            return
        write_corpus(large, seed=11, n_sentences=args.sentences * args.scale)
        results = {}
        for kind in args.kinds:
            for name, data in (("1x", small), (f"{args.scale}x", large)):
                r = run(kind, data, tmp / f"{kind}-{name}", args.device)
                results[f"{kind} {name}"] = r
                t = r["timings"]
                pass_s = t["forward"] + t["encode"] + t["bookkeeping"]
                print(f"{kind.upper()} {name:>4}: {r['tokens']:>8} tokens in {r['seconds']:6.1f} s "
                      f"(pass {pass_s:5.1f} s = {r['tokens'] / pass_s:7.0f} tok/s; forward {t['forward']:.1f} s, "
                      f"encoders {t['encode']:.1f} s, bookkeeping {t['bookkeeping']:.1f} s = "
                      f"{t['bookkeeping'] / (t['forward'] + t['encode']):.2f}x model+encoders); "
                      f"peak RSS {r['max_rss_mb']:.0f} MB, state {r['state_mb']:.1f} MB, file {r['db_mb']:.1f} MB",
                      flush=True)  # fmt: skip
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
