"""How good is the attribution estimator (circuit_atlas/attribution/estimate.py)?

Builds a random 4-layer Qwen2 (d 128) with a random CLT (1,024 features per layer, ~L0 per token set
by --l0), then for several prompt lengths and row budgets runs `attribute` + save + prune + scores in
a fresh process and prints the estimated and measured edge count (CSR nnz), peak memory (the rise of
VmHWM, reset through /proc/self/clear_refs before attributing, above the resident set then: the model's
own memory is not counted) and time. The raw figures of each run go to stderr as JSON (for refitting
the constants of estimate.py).

    python bench/estimate.py [--tokens 48 96 160] [--max-feature-nodes 0 1000] [--edge-budget 0 1e-3] [--l0 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = r"""
import json, sys, time, os
sys.path.insert(0, {root!r})
import torch
from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.attribution import estimate as E
from circuit_atlas.attribution.budget import memory_budget
from circuit_atlas.attribution.config import AttributionConfig

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(key + ':'))

model = ReplacementModel.from_pretrained({model!r}, {tc!r})
ids = torch.randint(5, model.vocab_size, ({T} - 1,), generator=torch.Generator().manual_seed(1)).tolist()
ids = model.tokenize(ids)
cfg = AttributionConfig(max_feature_nodes={K}, edge_budget={EB})
est = E.estimate_attribution(model, ids, cfg)
attribute(model, ids[:4], progress=False)  # warm-up
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')  # reset VmHWM to the current RSS: the peak below is the attribution's own
start = status('VmRSS')
t = time.perf_counter()
with memory_budget(1000):
    g = attribute(model, ids, max_feature_nodes={K}, edge_budget={EB}, progress=False)
t_attr = time.perf_counter() - t
g.save({out!r}); g.prune(); g.scores()
seconds = time.perf_counter() - t
peak = status('VmHWM') - start
nnz = g.n_edges
flop_s = (est.seconds - E.SECONDS_PER_EDGE * est.n_edges) * E.ROW_EFFICIENCY * E.matmul_throughput()
print(json.dumps(dict(T={T}, K={K}, EB={EB}, A=est.active_features, est_gb=est.peak_bytes / 1e9, est_s=est.seconds,
                      peak_gb=peak / 1e9, seconds=seconds, attribution_s=t_attr, nnz=nnz, est_nnz=est.n_edges,
                      exact=est.edges_exact, edges_gb=est.edges_bytes / 1e9, dense_gb=est.dense_bytes / 1e9,
                      flops=flop_s, throughput=E.matmul_throughput(),
                      fixed_gb=(est.peak_bytes - E.POST_BYTES_PER_EDGE * est.n_edges) / 1e9)))
"""


def build(root: str, l0: float) -> tuple[str, str]:
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from circuit_atlas import ReplacementModel
    from circuit_atlas.transcoders.io import save_transcoders
    from circuit_atlas.transcoders.random import calibrate_thresholds, random_transcoders

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from tiny import tiny_tokenizer

    tok: PreTrainedTokenizerFast = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    model_dir, tc_dir = os.path.join(root, "model"), os.path.join(root, "tc")
    Qwen2ForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    tc = random_transcoders("clt", 4, 128, 1024, activation="jumprelu", skip=True, seed=0)
    probe = ReplacementModel.from_pretrained(model_dir, tc)
    ids = torch.randint(5, len(tok), (256,), generator=torch.Generator().manual_seed(0)).tolist()
    calibrate_thresholds(tc, [x[1:] for x in probe.run(probe.tokenize(ids)).feature_inputs], target_l0=l0)
    save_transcoders(tc, tc_dir)
    return model_dir, tc_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[48, 96, 160])
    parser.add_argument("--max-feature-nodes", type=int, nargs="+", default=[0, 1000], help="0 = all")
    parser.add_argument("--l0", type=float, default=40)
    parser.add_argument("--edge-budget", type=float, nargs="+", default=[0], help="0 = exact (no budget)")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, tc_dir = build(tmp, args.l0)
        print("| tokens | max feature nodes | edge budget | active | est. edges | edges | sparse GB | dense GB | est. peak GB "
              "| peak GB | peak est/meas | est. s | s | time est/meas |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        runs = []
        for T in args.tokens:
            for K, EB in [(K, EB) for K in args.max_feature_nodes for EB in args.edge_budget]:
                code = CHILD.format(root=root, model=model_dir, tc=tc_dir, T=T, K=K or None, EB=EB or None,
                                    out=os.path.join(tmp, "g.safetensors"))  # fmt: skip
                r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                if r.returncode:
                    print(r.stderr[-2000:])
                    continue
                m = json.loads(r.stdout.strip().splitlines()[-1])
                bound = "" if m["exact"] else "≤ "
                print(f"| {T} | {K or 'all'} | {EB or 'exact'} | {m['A']:,} | {bound}{m['est_nnz']:,} | {m['nnz']:,} | "
                      f"{m['edges_gb']:.3f} | {m['dense_gb']:.3f} | {m['est_gb']:.3f} | {m['peak_gb']:.3f} | "
                      f"{m['est_gb'] / m['peak_gb']:.2f} | {m['est_s']:.1f} | {m['seconds']:.1f} | "
                      f"{m['est_s'] / m['seconds']:.2f} |", flush=True)  # fmt: skip
                print("<!-- " + json.dumps(m) + " -->", file=sys.stderr, flush=True)
                runs.append(m)
        print(refit(runs))


def refit(runs: list[dict]) -> str:
    """ROW_EFFICIENCY that the full graphs (exact edge counts) measured, SECONDS_PER_EDGE kept: the time of a
    run minus its edge term is the row batches' time, flops / (efficiency x probe throughput)."""
    from circuit_atlas.attribution import estimate as E

    fits = []
    for m in runs:
        if not m["exact"]:
            continue
        edge_s = m["est_s"] - m["flops"] / (E.ROW_EFFICIENCY * m["throughput"])
        rows_s = m["seconds"] - edge_s
        if rows_s > 0:
            fits.append(m["flops"] / (m["throughput"] * rows_s))
    if not fits:
        return "refit: no full graph among the runs"
    fits.sort()
    return (
        f"refit: ROW_EFFICIENCY {fits[len(fits) // 2]:.3f} (median of {len(fits)} full graphs, range "
        f"{fits[0]:.3f}-{fits[-1]:.3f}; now {E.ROW_EFFICIENCY})"
    )


if __name__ == "__main__":
    main()
