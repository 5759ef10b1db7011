"""Attribution benchmark: circuit-atlas against circuit-tracer 0.5.0 on the same model, transcoders
and prompt.

    python bench/attribution.py [--sizes small big] [--kinds plt clt] [--repeats N] [--reuse-ct]

For every size x kind it
  1. makes the fixtures if missing (bench/make_fixtures.py: random local Llama, tokenizer, PLT + CLT
     in our format and in circuit-tracer's cache layout);
  2. runs circuit-tracer in its own venv (bench/.venv-ct, made by bench/setup_circuit_tracer.sh if
     missing) as a separate process: bench/run_circuit_tracer.py;
  3. runs circuit-atlas as a separate process: bench/run_ours.py (each process's peak RSS is its own);
  4. compares the two graphs after aligning nodes by identity: feature (layer, pos, feature),
     error (layer, pos), embedding pos, logit token id. circuit-tracer has error nodes at BOS (all
     zero) and we have none: a node missing on one side counts as a zero row and column there.

It prints, per engine, attribute() wall time, peak RSS, node and edge counts; between them the speed
ratio (circuit-tracer time / ours), the memory ratio (ours / circuit-tracer) and the relative Frobenius
difference ||A_ours - A_ct||_F / ||A_ct||_F; and writes bench/RESULTS.md and bench/RESULTS.json
(rows from earlier runs of other size x kind combinations are kept).

Both engines: fp32, CPU, batch_size 256, max_n_logits 10, desired_logit_prob 0.95, every feature
(max_feature_nodes None), one warm-up attribute() on a 4-token prefix first, then one measured call
(--repeats N: N calls, median reported; default 5 for small, 1 for big). Children get
OMP_WAIT_POLICY=PASSIVE unless it is set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / "work"
VENV_PY = BENCH / ".venv-ct" / "bin" / "python"
RESULTS_MD = BENCH / "RESULTS.md"
RESULTS_JSON = BENCH / "RESULTS.json"


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(cmd: list[str], what: str) -> float:
    """Run a child with inherited stdout/stderr (its progress bars show); return wall seconds."""
    say(f"{what}: {' '.join(shlex.quote(str(c)) for c in cmd)}")
    t0 = time.time()
    proc = subprocess.run([str(c) for c in cmd], cwd=REPO, env=child_env())
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed with exit code {proc.returncode}")
    return time.time() - t0


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
            [str(VENV_PY), "-c", "import torch; print(torch.__version__)"],
            capture_output=True,
            text=True,
            env=child_env(),
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


# --- graph comparison ---------------------------------------------------------------------
def node_keys(t: dict, n_layers: int) -> list[tuple]:
    """Identity of every node of a saved graph, in its adjacency order."""
    T = int(t["input_ids"].shape[0])
    keys = [("feature", *map(int, row)) for row in t["features"].tolist()]
    if "errors" in t:
        keys += [("error", int(l), int(p)) for l, p in t["errors"].tolist()]
    else:  # circuit-tracer: every (layer, pos), layer-major, BOS included
        keys += [("error", l, p) for l in range(n_layers) for p in range(T)]
    keys += [("embedding", p) for p in range(T)]
    keys += [("logit", int(i)) for i in t["logit_ids"].tolist()]
    assert len(keys) == t["adjacency"].shape[0], (len(keys), t["adjacency"].shape)
    return keys


def compare(ct_path: Path, ours_path: Path, n_layers: int) -> dict:
    import torch
    from safetensors.torch import load_file

    ct, ours = load_file(str(ct_path)), load_file(str(ours_path))
    A, B = ct["adjacency"], ours["adjacency"]  # float32; differences accumulate in float64, by row chunks
    kc, ko = node_keys(ct, n_layers), node_keys(ours, n_layers)
    pos_o = {k: i for i, k in enumerate(ko)}
    pos_c = {k: i for i, k in enumerate(kc)}
    # m[i] = index in ours of circuit-tracer's node i (-1 when we have no such node)
    m = torch.tensor([pos_o.get(k, -1) for k in kc], dtype=torch.long)
    have = m >= 0
    mc = m.clamp(min=0)
    only_ct = [k for k in kc if k not in pos_o]
    only_ours = [k for k in ko if k not in pos_c]
    in_ct = torch.zeros(len(ko), dtype=torch.bool)
    in_ct[m[have]] = True

    diff2 = normA2 = normB2 = 0.0
    max_abs = 0.0
    chunk = 512
    # ||A - B||^2 over circuit-tracer's cells (B gathered into A's order, zero where the node is missing)...
    for i0 in range(0, A.shape[0], chunk):
        a = A[i0 : i0 + chunk].double()
        bg = B[mc[i0 : i0 + chunk]][:, mc].double()
        bg[~have[i0 : i0 + chunk]] = 0
        bg[:, ~have] = 0
        d = a - bg
        diff2 += float((d * d).sum())
        max_abs = max(max_abs, float(d.abs().max()))
        normA2 += float((a * a).sum())
    # ...plus our cells whose row or column node circuit-tracer does not have.
    for r0 in range(0, B.shape[0], chunk):
        b = B[r0 : r0 + chunk].double()
        normB2 += float((b * b).sum())
        uncovered = ~(in_ct[r0 : r0 + chunk, None] & in_ct[None, :])
        if uncovered.any():
            diff2 += float((b[uncovered] ** 2).sum())
            max_abs = max(max_abs, float(b[uncovered].abs().max()))
    normA, normB = normA2**0.5, normB2**0.5
    rel = diff2**0.5 / normA if normA else float("nan")

    # mass carried by nodes present on only one side (should be 0: circuit-tracer's BOS errors)
    idx_only_ct = torch.tensor([pos_c[k] for k in only_ct], dtype=torch.long)
    mass_only_ct = float(A[:, idx_only_ct].abs().sum() + A[idx_only_ct].abs().sum()) if len(only_ct) else 0.0
    idx_only_ours = torch.tensor([pos_o[k] for k in only_ours], dtype=torch.long)
    mass_only_ours = float(B[:, idx_only_ours].abs().sum() + B[idx_only_ours].abs().sum()) if len(only_ours) else 0.0

    def kinds(keys):
        out: dict[str, int] = {}
        for k in keys:
            out[k[0]] = out.get(k[0], 0) + 1
        return out

    fa = {tuple(map(int, r)): float(a) for r, a in zip(ct["features"].tolist(), ct["activations"].tolist())}
    fb = {tuple(map(int, r)): float(a) for r, a in zip(ours["features"].tolist(), ours["activations"].tolist())}
    common = fa.keys() & fb.keys()
    act_diff = max((abs(fa[k] - fb[k]) / max(abs(fa[k]), 1e-12) for k in common), default=0.0)
    return {
        "rel_frobenius": rel,
        "max_abs_diff": max_abs,
        "max_abs_ct": float(A.abs().max()),
        "norm_ct": normA,
        "norm_ours": normB,
        "nodes_only_ct": kinds(only_ct),
        "nodes_only_ours": kinds(only_ours),
        "abs_mass_only_ct": mass_only_ct,
        "abs_mass_only_ours": mass_only_ours,
        "same_logit_targets": sorted(ct["logit_ids"].tolist()) == sorted(ours["logit_ids"].tolist()),
        "common_features": len(common),
        "max_rel_activation_diff": act_diff,
    }


# --- report -------------------------------------------------------------------------------
def fmt_s(x):
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def fmt_gb(x):
    return "—" if x is None else f"{x:.2f}"


def load(e: dict) -> str:
    before, after = e.get("loadavg_before"), e.get("loadavg_after")
    return "?" if before is None else f"{before[0]:.1f}/{after[0]:.1f}"


def write_results(rows: list[dict], info: dict, command: str) -> None:
    RESULTS_JSON.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    lines = [
        "# Attribution benchmark: circuit-atlas vs circuit-tracer 0.5.0",
        "",
        f"Last updated {info['date']} by `{command}`.",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['mem_gb']} GB RAM, shared with other users; "
        f"Python {info['python']}; torch {info['torch']} (circuit-tracer venv: torch {info['torch_ct_venv']}); "
        f"OMP_WAIT_POLICY={info['omp_wait_policy']}. fp32 on CPU, batch_size 256, max_n_logits 10, "
        "desired_logit_prob 0.95, all features (max_feature_nodes None), TransformerLens backend for circuit-tracer, its transcoders loaded with its defaults "
        "(lazy_decoder=True, lazy_encoder=False). "
        "Each engine runs in its own process after a warm-up attribute() on a 4-token prefix; "
        "`time` is the measured attribute() call (median of 5 calls for `small`, whose sub-second times are noisy; one call for `big`), `peak RSS` is the process's "
        "peak resident memory (ru_maxrss, model and transcoders included).",
        "",
        "Fixtures (bench/make_fixtures.py, seed 1234): random Llama; `small` = 4 layers, d_model 128, 1,024 "
        "features/layer, 12-token prompt; `big` = 8 layers, d_model 512, 8,192 features/layer, 64-token prompt. "
        "JumpReLU thresholds calibrated so every pre-activation of the prompt is ≥ 0.05 std from its threshold.",
        "",
        "| size | kind | active feat. | circuit-tracer time (s) | ours time (s) | speed-up (ct/ours) "
        "| ct peak RSS (GB) | ours peak RSS (GB) | memory (ours/ct) | ct nodes / edges | ours nodes / edges "
        "| rel. Frobenius diff | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ct, ours, cmp_ = r.get("ct"), r.get("ours"), r.get("compare")
        pending = "ours: pending" if ours is None else None
        speed = f"{ct['attribute_s'] / ours['attribute_s']:.1f}×" if ct and ours else (pending or "—")
        mem = f"{ours['peak_rss_gb'] / ct['peak_rss_gb']:.2f}" if ct and ours else (pending or "—")
        lines.append(
            f"| {r['size']} | {r['kind'].upper()} | {(ct or ours or {}).get('active_features', '—'):,} "
            f"| {fmt_s(ct and ct['attribute_s'])} | {fmt_s(ours['attribute_s']) if ours else 'pending'} | {speed} "
            f"| {fmt_gb(ct and ct['peak_rss_gb'])} | {fmt_gb(ours['peak_rss_gb']) if ours else 'pending'} | {mem} "
            f"| {ct['nodes']:,} / {ct['edges']:,} | "
            + (f"{ours['nodes']:,} / {ours['edges']:,}" if ours else "pending")
            + f" | {format(cmp_['rel_frobenius'], '.1e') if cmp_ else 'pending'} | {r['date']} |"
        )
    lines += ["", "Notes:", ""]
    for r in rows:
        cmp_ = r.get("compare")
        if cmp_:
            lines.append(
                f"- {r['size']} {r['kind'].upper()}: nodes only in circuit-tracer {cmp_['nodes_only_ct'] or 'none'} "
                f"(|A| mass {cmp_['abs_mass_only_ct']:.2g}), only in ours {cmp_['nodes_only_ours'] or 'none'} "
                f"(mass {cmp_['abs_mass_only_ours']:.2g}); same logit targets: {cmp_['same_logit_targets']}; "
                f"max |ΔA| {cmp_['max_abs_diff']:.2e} (max |A| {cmp_['max_abs_ct']:.2e}); "
                f"max rel. activation diff {cmp_['max_rel_activation_diff']:.1e}; "
                f"attribute-phase peak RSS ct {fmt_gb(r['ct'].get('attribute_peak_rss_gb'))} GB, "
                f"ours {fmt_gb(r['ours'].get('attribute_peak_rss_gb'))} GB; "
                f"1-min load average before/after: ct {load(r['ct'])}, ours {load(r['ours'])}; "
                f"measured at ct {r['ct'].get('measured_at', '?')}, ours {r['ours'].get('measured_at', '?')}; "
                f"repeats ct {len(r['ct'].get('attribute_runs_s', [1]))}, ours {len(r['ours'].get('attribute_runs_s', [1]))}."
            )
        elif r.get("ct"):
            lines.append(
                f"- {r['size']} {r['kind'].upper()}: ours pending ({r.get('pending_reason', 'engine not run')}); "
                f"circuit-tracer attribute-phase peak RSS {fmt_gb(r['ct'].get('attribute_peak_rss_gb'))} GB; "
                f"1-min load average before/after {load(r['ct'])}."
            )
    loads = [
        e["loadavg_before"][0] for r in rows for e in (r.get("ct"), r.get("ours")) if e and e.get("loadavg_before")
    ]
    if loads and max(loads) > (info.get("nproc") or 1):
        lines += [
            "",
            f"**Load caveat:** the machine was shared while these were measured (1-minute load average up to "
            f"{max(loads):.1f} on {info['nproc']} CPUs), so absolute times are inflated and noisy; compare "
            "ratios, and rerun on a quiet machine for absolute figures.",
        ]
    lines += [
        "",
        "Nodes are aligned by identity before comparing (circuit-tracer has error nodes at BOS, all zero; "
        "circuit-atlas has none, so they count as zero rows/columns). "
        "Rel. Frobenius diff = ‖A_ours − A_ct‖_F / ‖A_ct‖_F over the aligned dense adjacency.",
        "",
        "Reproduce: `bash bench/setup_circuit_tracer.sh && python bench/attribution.py --sizes small big --kinds plt clt`.",
        "",
    ]
    RESULTS_MD.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["small", "big"], choices=["small", "big"])
    ap.add_argument("--kinds", nargs="+", default=["plt", "clt"], choices=["plt", "clt"])
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="measured attribute() calls per engine, median reported (default: 5 for small, 1 for big)",
    )
    ap.add_argument(
        "--reuse-ct",
        action="store_true",
        help="reuse an existing circuit-tracer result for the same fixtures instead of rerunning it",
    )
    ap.add_argument("--skip-ours", action="store_true", help="run circuit-tracer only")
    args = ap.parse_args()
    command = "python bench/attribution.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t_all = time.time()

    if not VENV_PY.exists():
        say("circuit-tracer venv missing: running bench/setup_circuit_tracer.sh (about 1.5 min)")
        subprocess.run(["bash", str(BENCH / "setup_circuit_tracer.sh")], check=True, env=child_env())

    for size in args.sizes:
        if not (WORK / size / "manifest.json").exists():
            run([sys.executable, BENCH / "make_fixtures.py", "--sizes", size], f"fixtures {size}")

    ours_ok, why = (False, "--skip-ours") if args.skip_ours else engine_available()
    if not ours_ok:
        say(f"circuit-atlas engine not available ({why}); reporting circuit-tracer only, ours: pending")

    info = machine()
    info["date"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    old = json.loads(RESULTS_JSON.read_text())["rows"] if RESULTS_JSON.exists() else []
    rows = {(r["size"], r["kind"]): r for r in old}

    jobs = [(s, k) for s in args.sizes for k in args.kinds]
    for n, (size, kind) in enumerate(jobs, 1):
        root = WORK / size
        manifest = json.loads((root / "manifest.json").read_text())
        tag = f"({n}/{len(jobs)}) {size} {kind.upper()}"
        repeats = args.repeats or (5 if size == "small" else 1)
        ct_json = root / f"ct_{kind}.json"
        reuse = (
            args.reuse_ct
            and ct_json.exists()
            and json.loads(ct_json.read_text()).get("fixtures_created") == manifest["created"]
        )
        if reuse:
            say(f"{tag}: reusing circuit-tracer result {ct_json}")
        else:
            say(
                f"{tag}: circuit-tracer 0.5.0 (separate venv process)"
                + (" - the big size takes several minutes" if size == "big" else "")
            )
            run(
                [
                    VENV_PY,
                    BENCH / "run_circuit_tracer.py",
                    "--size",
                    size,
                    "--kind",
                    kind,
                    "--repeats",
                    repeats,
                    "--verbose",
                ],
                f"{tag} circuit-tracer",
            )
        ct = json.loads(ct_json.read_text())
        row = {
            "size": size,
            "kind": kind,
            "date": info["date"],
            "command": command,
            "ct": ct,
            "ours": None,
            "compare": None,
            "ct_reused": bool(reuse),
        }
        if ours_ok:
            say(f"{tag}: circuit-atlas (separate process)")
            try:
                run(
                    [sys.executable, BENCH / "run_ours.py", "--size", size, "--kind", kind, "--repeats", repeats],
                    f"{tag} circuit-atlas",
                )
                row["ours"] = json.loads((root / f"ours_{kind}.json").read_text())
                say(f"{tag}: comparing graphs")
                row["compare"] = compare(
                    root / f"ct_{kind}.safetensors", root / f"ours_{kind}.safetensors", manifest["config"]["n_layers"]
                )
            except RuntimeError as exc:
                say(f"{tag}: circuit-atlas failed: {exc}")
                row["pending_reason"] = str(exc)
        else:
            row["pending_reason"] = why or "engine not available"
        rows[(size, kind)] = row
        print_row(row)
        order = {("small", "plt"): 0, ("small", "clt"): 1, ("big", "plt"): 2, ("big", "clt"): 3}
        write_results(sorted(rows.values(), key=lambda r: order.get((r["size"], r["kind"]), 9)), info, command)

    say(
        f"done in {time.time() - t_all:.0f}s; wrote {RESULTS_MD.relative_to(REPO)} and {RESULTS_JSON.relative_to(REPO)}"
    )


def print_row(r: dict) -> None:
    ct, ours, c = r["ct"], r["ours"], r["compare"]
    print(f"\n=== {r['size']} {r['kind'].upper()} ===")
    print(f"{'engine':<16}{'attribute() s':>14}{'peak RSS GB':>13}{'nodes':>9}{'edges':>13}{'active feat.':>14}")
    for name, e in (("circuit-tracer", ct), ("circuit-atlas", ours)):
        if e is None:
            print(f"{name:<16}{'pending':>14}")
            continue
        print(
            f"{name:<16}{e['attribute_s']:>14.3f}{e['peak_rss_gb']:>13.2f}{e['nodes']:>9,}{e['edges']:>13,}"
            f"{e['active_features']:>14,}"
        )
    if ours:
        print(
            f"speed ratio (ct/ours) {ct['attribute_s'] / ours['attribute_s']:.2f}x   "
            f"memory ratio (ours/ct) {ours['peak_rss_gb'] / ct['peak_rss_gb']:.2f}"
        )
    if c:
        print(
            f"relative Frobenius difference {c['rel_frobenius']:.2e}  (max |dA| {c['max_abs_diff']:.2e}; "
            f"nodes only in ct {c['nodes_only_ct'] or '-'}, only in ours {c['nodes_only_ours'] or '-'}; "
            f"same logit targets {c['same_logit_targets']})"
        )
    print(flush=True)


if __name__ == "__main__":
    main()
