"""How good is the attribution estimator (circuit_atlas/attribution/estimate.py)?

Builds a random 4-layer Qwen2 (d 128) with a random CLT (1,024 features per layer, ~L0 per token set
by --l0), then for several prompt lengths and row budgets runs `attribute` + save + prune + scores in
a fresh process and prints measured peak memory (ru_maxrss growth) and time next to the estimate.

    python bench/estimate.py [--tokens 64 128 256] [--l0 40]
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
import json, resource, sys, time, os
sys.path.insert(0, {root!r})
import torch
from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.attribution.config import AttributionConfig
from circuit_atlas.attribution.estimate import estimate_attribution, memory_budget
model = ReplacementModel.from_pretrained({model!r}, {tc!r})
ids = torch.randint(5, model.vocab_size, ({T} - 1,), generator=torch.Generator().manual_seed(1)).tolist()
cfg = AttributionConfig(max_feature_nodes={K})
est = estimate_attribution(model, ids, cfg)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rss_now = int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
t = time.perf_counter()
with memory_budget(1000):
    g = attribute(model, ids, max_feature_nodes={K}, progress=False)
t_attr = time.perf_counter() - t
g.save({out!r}); g.prune(); g.scores()
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(T={T}, K={K}, A=est.active_features, est_gb=est.peak_bytes / 1e9, est_s=est.seconds,
                      peak_gb=(peak - max(base, rss_now)) / 1e9, seconds=seconds, attribution_s=t_attr,
                      edges_gb=est.edges_bytes / 1e9)))
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
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--max-feature-nodes", type=int, nargs="+", default=[0, 1000], help="0 = all")
    parser.add_argument("--l0", type=float, default=40)
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, tc_dir = build(tmp, args.l0)
        print("| tokens | max feature nodes | active | edges GB | est. peak GB | peak GB | est. s | s |")
        print("|---|---|---|---|---|---|---|---|")
        for T in args.tokens:
            for K in args.max_feature_nodes:
                code = CHILD.format(root=root, model=model_dir, tc=tc_dir, T=T, K=K or None,
                                    out=os.path.join(tmp, "g.safetensors"))  # fmt: skip
                r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                if r.returncode:
                    print(r.stderr[-2000:])
                    continue
                m = json.loads(r.stdout.strip().splitlines()[-1])
                print(f"| {T} | {K or 'all'} | {m['A']:,} | {m['edges_gb']:.3f} | {m['est_gb']:.3f} | "
                      f"{m['peak_gb']:.3f} | {m['est_s']:.1f} | {m['seconds']:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
