"""Attribution benchmark: circuit-atlas against circuit-tracer 0.5.0 on the same model, transcoders,
prompt and settings, side by side in one run.

    python bench/attribution.py [--sizes small big smollm2] [--kinds plt clt] [--max-feature-nodes all 2048]
                                [--repeats 3] [--reuse] [--ct-timeout S] [--skip-ct]
    python bench/attribution.py --scaling [big toyworld smollm2] [--tokens 16 64 256 1024] [--kinds plt]
                                [--max-feature-nodes all 2048] [--ct-timeout S]

For every size x kind x max_feature_nodes case it
  1. makes the fixtures if missing (bench/make_fixtures.py: a random local Llama, its
     tokenizer, PLT + CLT in our format and in circuit-tracer's cache layout);
  2. runs circuit-tracer in its own venv (bench/.venv-ct, made by bench/setup_circuit_tracer.sh if missing)
     as a separate process (bench/run_circuit_tracer.py), under a wall-clock cap (--ct-timeout: a run cut
     off is reported as "> T s") and skipped, with the reason, where its dense edge matrix alone would
     exceed --ct-max-gb;
  3. runs circuit-atlas as a separate process (bench/run_ours.py; each process's peak RSS is its own);
  4. compares the two graphs after aligning nodes by identity: feature (layer, pos, feature), error
     (layer, pos), embedding pos, logit token id.

Each engine makes one warm-up attribute() on a 4-token prefix, then --repeats measured calls (default
3): the median wall time is reported with the min-max. Both: fp32, CPU, batch_size 256, max_n_logits 10,
desired_logit_prob 0.95. Children get OMP_WAIT_POLICY=PASSIVE unless it is set.

--scaling runs three families at 16, 64, 256 and 1,024 tokens (bench/report.py SCALING): the 8-layer case
(`big`, d 512, 8,192 features per layer, transcoders recalibrated per prompt), the shipped toy world with its
trained PLT, and SmolLM2-135M with a calibrated random PLT; it fits time ~ T^a and peak ~ T^b per engine
and compares ours with the physical floor (bench/floor.py).

Results: bench/RESULTS.json (every case ever run, keyed by size/kind/max_feature_nodes; a rerun replaces
its rows) and bench/RESULTS.md (the tables above the Estimator section, which is kept as it is).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / "work"
VENV_PY = BENCH / ".venv-ct" / "bin" / "python"

sys.path.insert(0, str(BENCH))
from compare import compare  # noqa: E402
from report import (  # noqa: E402
    RESULTS_JSON,
    RESULTS_MD,
    RESULTS_VERSION,
    SCALING,
    SIZE_ORDER,
    case_key,
    fmt_t,
    mfn_label,
    write_results,
)
from run_circuit_tracer import stem  # noqa: E402


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(cmd: list, what: str, timeout: float | None = None) -> tuple[float, bool]:
    """Run a child (its progress bars show); return (wall seconds, timed out). Fails on a non-zero exit.

    The child gets its own process group, so a timeout ends it and anything it started."""
    say(f"{what}: {' '.join(shlex.quote(str(c)) for c in cmd)}" + (f"  (cap {timeout:.0f} s)" if timeout else ""))
    t0 = time.time()
    proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=child_env(), start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        say(f"{what}: stopped at the {timeout:.0f} s cap")
        return time.time() - t0, True
    if rc == -signal.SIGKILL:
        raise RuntimeError(f"{what} was killed{oom_note(proc.pid)}")
    if rc != 0:
        raise RuntimeError(f"{what} failed with exit code {rc}")
    return time.time() - t0, False


def oom_note(pid: int) -> str:
    """What the kernel log says of a SIGKILLed child: the out-of-memory killer and the child's resident set."""
    try:
        log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return " (SIGKILL)"
    for line in reversed(log.splitlines()):
        if f"Killed process {pid} " in line:
            rss = next((w for w in line.split() if w.startswith("anon-rss:")), "")
            kb = int("".join(c for c in rss if c.isdigit()) or 0)
            return f" by the kernel's out-of-memory killer at {kb / 2**20:.1f} GB resident"
    return " (SIGKILL)"


def engine_available() -> tuple[bool, str]:
    code = "import circuit_atlas; circuit_atlas.attribute; circuit_atlas.ReplacementModel"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(), capture_output=True, text=True)
    return proc.returncode == 0, proc.stderr.strip().splitlines()[-1] if proc.returncode else ""


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    import torch

    ct_torch = None
    if VENV_PY.exists():
        out = subprocess.run(
            [str(VENV_PY), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
        )
        ct_torch = out.stdout.strip() or None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gb": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_ct_venv": ct_torch,
        "omp_wait_policy": child_env().get("OMP_WAIT_POLICY"),
    }


# --- one case -----------------------------------------------------------------------------
def ct_dense_gb(manifest: dict, kind: str, mfn: int | None) -> float:
    """circuit-tracer's edge matrix (rows x all nodes, fp32, allocated up front) for this case."""
    A = manifest["kinds"][kind]["active_features"]
    L, T = manifest["config"]["n_layers"], len(manifest["input_ids"])
    nodes = A + L * T + T + 10
    rows = (A if mfn is None else min(mfn, A)) + 10
    return rows * nodes * 4 / 2**30


def active_of(size: str, kind: str) -> int:
    return json.loads((WORK / size / "manifest.json").read_text())["kinds"][kind]["active_features"]


def kinds_of(size: str) -> set[str]:
    return set(json.loads((WORK / size / "manifest.json").read_text())["kinds"])


def stats(runs: list[float]) -> dict:
    s = sorted(runs)
    return {"median": s[len(s) // 2], "min": s[0], "max": s[-1], "n": len(s)}


def fresh(path: Path, manifest: dict, repeats: int) -> bool:
    if not path.exists():
        return False
    r = json.loads(path.read_text())
    return r.get("fixtures_created") == manifest["created"] and len(r.get("attribute_runs_s", [])) >= repeats


def run_case(size: str, kind: str, mfn: int | None, args, tag: str, ours_ok: bool) -> dict:
    root = WORK / size
    manifest = json.loads((root / "manifest.json").read_text())
    st = stem(kind, mfn)
    repeats = args.repeats
    row = {
        "key": case_key(size, kind, mfn),
        "size": size,
        "kind": kind,
        "max_feature_nodes": mfn,
        "tokens": len(manifest["input_ids"]),
        "n_layers": manifest["config"]["n_layers"],
        "d_model": manifest["config"]["d_model"],
        "n_features": manifest["config"]["n_features"],
        "active_features": manifest["kinds"][kind]["active_features"],
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "ct": None,
        "ours": None,
        "compare": None,
    }
    # circuit-tracer
    ct_json = root / f"ct_{st}.json"
    dense = ct_dense_gb(manifest, kind, mfn)
    capped = root / f"ct_{st}.capped.json"  # a run stopped at --ct-timeout, remembered for --reuse
    if args.reuse and not ct_json.exists() and (root / f"ct_{st}.error.json").exists():
        row["ct_status"] = "failed: " + json.loads((root / f"ct_{st}.error.json").read_text())["error"]
    elif dense > args.ct_max_gb:
        row["ct_status"] = (
            f"not run: its dense edge matrix alone would be {dense:.1f} GB (> --ct-max-gb {args.ct_max_gb})"
        )
        say(f"{tag}: circuit-tracer {row['ct_status']}")
    elif args.assemble and not (ct_json.exists() or capped.exists()):
        row["ct_status"] = "not run"
    elif args.skip_ct or size in args.skip_ct_sizes:
        row["ct_status"] = "not run (--skip-ct)"
    elif args.reuse and fresh(ct_json, manifest, 1):
        say(f"{tag}: reusing circuit-tracer result {ct_json.name}")
        row["ct"], row["ct_status"] = json.loads(ct_json.read_text()), "reused"
    elif (
        args.reuse and capped.exists() and json.loads(capped.read_text()).get("fixtures_created") == manifest["created"]
    ):
        c = json.loads(capped.read_text())
        say(f"{tag}: reusing circuit-tracer's capped run ({c['timeout_s']:.0f} s)")
        row["ct_status"] = f"> {c['timeout_s']:.0f} s (stopped at the cap; process wall incl. load)"
        row["ct_timeout_s"], row["ct_loadavg_before"] = c["timeout_s"], c["loadavg_before"]
    elif args.assemble:
        row["ct_status"] = "not run (its result is of other fixtures)"
    else:
        ct_json.unlink(missing_ok=True)
        capped.unlink(missing_ok=True)
        ct_repeats = args.ct_repeats or repeats
        cmd = [VENV_PY, BENCH / "run_circuit_tracer.py", "--size", size, "--kind", kind, "--repeats", ct_repeats]
        cmd += ["--verbose"] + (["--max-feature-nodes", mfn] if mfn is not None else [])
        load0 = os.getloadavg()
        try:
            _, timed_out = run(cmd, f"{tag} circuit-tracer", timeout=args.ct_timeout)
        except RuntimeError as exc:
            err = root / f"ct_{st}.error.json"
            if not err.exists():  # killed, or died before writing its reason: keep ours for --reuse
                err.write_text(
                    json.dumps({"error": str(exc).split(": ", 1)[-1], "fixtures_created": manifest["created"]})
                )
            why = json.loads(err.read_text())["error"]
            timed_out, row["ct_status"] = False, f"failed: {why}"
        if timed_out:
            row["ct_status"] = f"> {args.ct_timeout:.0f} s (stopped at the cap; process wall incl. load)"
            row["ct_timeout_s"] = args.ct_timeout
            row["ct_loadavg_before"] = load0
            capped.write_text(
                json.dumps(
                    {"timeout_s": args.ct_timeout, "loadavg_before": load0, "fixtures_created": manifest["created"]}
                )
            )
        elif ct_json.exists():
            row["ct"], row["ct_status"] = json.loads(ct_json.read_text()), "ok"
    # circuit-atlas
    ours_json = root / f"ours_{st}.json"
    if args.assemble and not (ours_json.exists() or (root / f"ours_{st}.error.json").exists()):
        row["ours_status"] = "not run"
    elif not ours_ok:
        row["ours_status"] = "engine not available"
    elif args.reuse and fresh(ours_json, manifest, 1 if args.assemble else repeats):  # --assemble never runs
        say(f"{tag}: reusing circuit-atlas result {ours_json.name}")
        row["ours"], row["ours_status"] = json.loads(ours_json.read_text()), "reused"
    elif args.reuse and (root / f"ours_{st}.error.json").exists():
        why = json.loads((root / f"ours_{st}.error.json").read_text())["error"]
        say(f"{tag}: reusing circuit-atlas's refusal: {why[:200]}")
        row["ours_status"] = f"refused/failed: {why}"
    elif args.assemble:
        row["ours_status"] = "not run (its result is of other fixtures)"
    else:
        ours_json.unlink(missing_ok=True)
        (root / f"ours_{st}.error.json").unlink(missing_ok=True)
        cmd = [sys.executable, BENCH / "run_ours.py", "--size", size, "--kind", kind, "--repeats", repeats]
        cmd += ["--max-feature-nodes", mfn] if mfn is not None else []
        cmd += ["--memory-budget-gb", args.ours_memory_budget_gb] if args.ours_memory_budget_gb else []
        try:
            _, timed_out = run(cmd, f"{tag} circuit-atlas", timeout=args.ours_timeout)
            if timed_out:
                row["ours_status"] = f"> {args.ours_timeout:.0f} s (stopped at the cap)"
            else:
                row["ours"], row["ours_status"] = json.loads(ours_json.read_text()), "ok"
        except RuntimeError as exc:
            err = root / f"ours_{st}.error.json"
            why = json.loads(err.read_text())["error"] if err.exists() else str(exc)
            row["ours_status"] = f"refused/failed: {why}"
    for e in ("ct", "ours"):
        if row[e]:
            row[e]["time"] = stats(row[e]["attribute_runs_s"])
    if row["ct"] and row["ours"]:
        say(f"{tag}: comparing graphs")
        row["compare"] = compare(root / f"ct_{st}.safetensors", root / f"ours_{st}.safetensors", row["n_layers"])
    if row["ours"] and size != "small" and not args.no_floor:
        from floor import floor_for

        fl_json = root / f"floor_{st}.json"  # measured with the run (the matmul rate then), kept for --assemble
        if (
            args.reuse
            and fl_json.exists()
            and json.loads(fl_json.read_text()).get("ours_measured_at") == row["ours"].get("measured_at")
        ):
            row["floor"] = json.loads(fl_json.read_text())
        else:
            row["floor"] = floor_for(size, kind, st) | {"ours_measured_at": row["ours"].get("measured_at")}
            fl_json.write_text(json.dumps(row["floor"]))
        say(
            f"{tag}: floor {row['floor']['tflop']:.2f} TFLOP at {row['floor']['gflops']:.0f} GFLOP/s = "
            f"{row['floor']['floor_s']:.1f} s; ours {row['ours']['time']['median']:.1f} s"
        )
    return row


def parse_mfn(s: str) -> int | None:
    if s == "all":
        return None
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-feature-nodes takes 'all' or an integer >= 0, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"--max-feature-nodes takes 'all' or an integer >= 0, got {s!r}")
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["small", "big"], choices=SIZE_ORDER, help="fixtures to run")
    ap.add_argument("--kinds", nargs="+", default=["plt", "clt"], choices=["plt", "clt"])
    ap.add_argument(
        "--max-feature-nodes",
        nargs="+",
        type=parse_mfn,
        default=[None],
        help="'all' (every feature's row) and/or integers: feature rows by influence [all]",
    )
    ap.add_argument("--repeats", type=int, default=3, help="measured attribute() calls per engine: median, min-max [3]")
    ap.add_argument(
        "--ct-repeats", type=int, default=None, help="measured calls of circuit-tracer, if not --repeats (slow cases)"
    )
    ap.add_argument(
        "--scaling",
        nargs="*",
        choices=list(SCALING),
        default=None,
        help="the scaling series (overrides --sizes): families big, toyworld, smollm2 [all three] at --tokens",
    )
    ap.add_argument(
        "--tokens",
        nargs="+",
        type=int,
        default=[16, 64, 256, 1024],
        choices=[16, 64, 256, 1024],
        help="prompt lengths of --scaling [16 64 256 1024]",
    )
    ap.add_argument("--ct-timeout", type=float, default=None, help="cap on a circuit-tracer process, seconds [none]")
    ap.add_argument(
        "--ours-memory-budget-gb", type=float, default=None, help="circuit-atlas's memory budget [its default]"
    )
    ap.add_argument("--ours-timeout", type=float, default=None, help="cap on a circuit-atlas process, seconds [none]")
    ap.add_argument(
        "--ct-max-gb",
        type=float,
        default=8.0,
        help="skip circuit-tracer where its dense edge matrix alone would exceed this (GB) [8]",
    )
    ap.add_argument("--skip-ct", action="store_true", help="run circuit-atlas only")
    ap.add_argument("--skip-ct-sizes", nargs="*", default=[], help="run circuit-atlas only on these sizes")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="reuse each engine's result for the same fixtures (with at least --repeats runs) instead of rerunning",
    )
    ap.add_argument("--no-floor", action="store_true", help="skip the floor computation")
    ap.add_argument(
        "--assemble",
        action="store_true",
        help="run nothing: rebuild the tables from the results under bench/work (implies --reuse)",
    )
    args = ap.parse_args()
    if args.assemble:
        args.reuse = True
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    command = "python bench/attribution.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t_all = time.time()
    if args.scaling is not None:
        sizes = [SCALING[f][t] for f in (args.scaling or list(SCALING)) for t in args.tokens]
    else:
        sizes = args.sizes

    if not VENV_PY.exists() and not args.skip_ct:
        say("circuit-tracer venv missing: running bench/setup_circuit_tracer.sh (about 1.5 min)")
        subprocess.run(["bash", str(BENCH / "setup_circuit_tracer.sh")], check=True, env=child_env())
    for size in [] if args.assemble else sizes:
        if not (WORK / size / "manifest.json").exists():
            script = "fixtures_real.py" if size.startswith(("smollm2", "toyworld")) else "make_fixtures.py"
            run([sys.executable, BENCH / script, "--sizes", size], f"fixtures {size}")

    ours_ok, why = engine_available()
    if not ours_ok:
        say(f"circuit-atlas engine not available ({why})")

    info = machine()
    info["date"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    old = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    fresh_format = old.get("format_version") == RESULTS_VERSION
    rows = {r["key"]: r for r in old.get("rows", [])} if fresh_format else {}
    commands = old.get("commands", []) if fresh_format else []
    if command not in commands:
        commands.append(command)

    mine: set[str] = set()
    jobs = [(s, k, m) for s in sizes for k in args.kinds for m in args.max_feature_nodes]
    # the fixtures say which kinds they have (SmolLM2 and the toy world: PLT only, see bench/fixtures_real.py)
    jobs = [j for j in jobs if not (WORK / j[0] / "manifest.json").exists() or j[1] in kinds_of(j[0])]
    same = [
        j for j in jobs if j[2] is not None and (WORK / j[0] / "manifest.json").exists() and j[2] >= active_of(*j[:2])
    ]
    for size, kind, mfn in same:
        say(
            f"{size} {kind.upper()} max_feature_nodes={mfn}: not run, the same graph as all ({active_of(size, kind)} active)"
        )
    jobs = [j for j in jobs if j not in same]
    for n, (size, kind, mfn) in enumerate(jobs, 1):
        tag = f"({n}/{len(jobs)}) {size} {kind.upper()} max_feature_nodes={mfn_label(mfn)}"
        if args.assemble and not (WORK / size / "manifest.json").exists():
            continue
        row = run_case(size, kind, mfn, args, tag, ours_ok)
        refused = row.get("ours_status", "").startswith("refused")
        if args.assemble and not (row["ct"] or row["ours"] or row.get("ct_timeout_s") or refused):
            continue
        rows[row["key"]] = row
        mine.add(row["key"])
        print_row(row)
        write_results(rows, info, commands, mine)

    say(
        f"done in {time.time() - t_all:.0f}s; wrote {RESULTS_MD.relative_to(REPO)} and {RESULTS_JSON.relative_to(REPO)}"
    )


def print_row(r: dict) -> None:
    ct, ours, c = r["ct"], r["ours"], r["compare"]
    print(f"\n=== {r['key']} ({r['tokens']} tokens, {r['active_features']:,} active) ===")
    print(f"{'engine':<16}{'attribute() s':>26}{'peak RSS GB':>13}{'nodes':>9}{'edges':>13}")
    for name, e, status in (("circuit-tracer", ct, r.get("ct_status")), ("circuit-atlas", ours, r.get("ours_status"))):
        if e is None:
            print(f"{name:<16}{status or '—':>26}")
            continue
        print(f"{name:<16}{fmt_t(e, None):>26}{e['peak_rss_gb']:>13.2f}{e['nodes']:>9,}{e['edges']:>13,}")
    if ct and ours:
        print(
            f"speed ratio (ct/ours) {ct['time']['median'] / ours['time']['median']:.2f}x   "
            f"memory ratio (ours/ct) {ours['peak_rss_gb'] / ct['peak_rss_gb']:.2f}"
        )
    if c:
        print(
            f"relative Frobenius {c['rel_frobenius']:.2e} (over ct's nodes {c['rel_frobenius_common']:.2e}; "
            f"max |dA| {c['max_abs_diff']:.2e}; same logit targets {c['same_logit_targets']}; "
            f"feature rows ct {c['feature_rows_ct']}, ours {c['feature_rows_ours']}, common {c['feature_rows_common']})"
        )
    print(flush=True)


if __name__ == "__main__":
    main()
