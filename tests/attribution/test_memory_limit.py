"""Attribution under a memory limit that the dense (rows x sources) edge matrix would exceed.

A subprocess builds a real (random, 2-layer) Llama and TopK transcoders with many active
features, warms up, then caps its own address space (RLIMIT_AS) at what it already uses plus
90% of the dense float32 (rows x sources) matrix of the prompt's graph. It checks that torch
really cannot allocate that matrix under the cap, then attributes the full graph, which must
succeed: rows hold only their causal cones and go straight into the sparse edge store.
(The dense engine allocated exactly that matrix up front, so it fails here.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent

CHILD = r"""
import json, os, resource, sys
import torch
from transformers import AutoModelForCausalLM
from tiny import PROMPT, _configure, tiny_tokenizer
from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.attribution.context import build_context
from circuit_atlas.transcoders.random import random_transcoders

torch.set_num_threads(1)
L, d, F, k = 2, 32, 320, 160
tok = tiny_tokenizer()
cfg = _configure("llama", len(tok), tok)
cfg.num_hidden_layers = L
torch.manual_seed(0)
hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
model = ReplacementModel(hf, tok, random_transcoders("plt", L, d, F, activation="topk", k=k, seed=1))
ids = model.tokenize(" ".join([PROMPT] * 4))  # 32 words + BOS
T = len(ids)
attribute(model, ids[:4], max_n_logits=3, progress=False)  # warm-up: thread pools, allocator arenas

A = build_context(model.freeze(ids)).n_features  # about k per layer and non-BOS position (TopK)
n_sources = A + L * (T - 1) + T
n_rows = A + 3
dense_bytes = 4 * n_rows * n_sources

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

headroom = int(0.9 * dense_bytes)
limit = vm_bytes() + headroom
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    torch.zeros(n_rows, n_sources)
    dense_fits = True
except (RuntimeError, MemoryError):
    dense_fits = False
graph = attribute(model, ids, max_n_logits=3, batch_size=256, progress=False)
scores = graph.scores()
print(json.dumps({
    "dense_fits": dense_fits, "dense_bytes": dense_bytes, "headroom": headroom, "expected_features": A,
    "n_features": graph.count("feature"), "n_rows": graph.n_rows, "n_sources": graph.n_sources,
    "n_edges": graph.n_edges, "replacement": scores["replacement"],
}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status and sets RLIMIT_AS")
def test_attribution_succeeds_under_a_limit_the_dense_matrix_exceeds():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]), MALLOC_ARENA_MAX="2")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, f"attribution failed under the memory limit:\n{proc.stderr[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["dense_fits"], "the limit must be one that the dense rows x sources matrix exceeds"
    assert out["dense_bytes"] > out["headroom"] > 300 * 2**20
    assert out["n_features"] == out["expected_features"] > 0.9 * 2 * 32 * 160  # every feature got its row
    assert out["n_rows"] == out["n_features"] + 3
    # every row was computed and kept sparse: far fewer stored edges than rows x sources
    assert 0 < out["n_edges"] < out["n_rows"] * out["n_sources"] / 4
    assert 0 < out["replacement"] <= 1
