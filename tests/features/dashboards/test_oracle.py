"""Every statistic equals a brute-force recomputation with all activations materialised.

The oracle runs the Hugging Face model one window at a time (no batching, no padding), reads the
transcoder input with its own hook on the pre-MLP norm, and encodes with the weights directly.
"""

import functools
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from circuit_atlas.features.dashboards import load_dashboard
from circuit_atlas.features.dashboards.stats import EDGES
from circuit_atlas.features.describe import decoder_logits
from circuit_atlas.replacement_model import ReplacementModel
from circuit_atlas.transcoders.io import load_transcoders
from circuit_atlas.zoo import ZOO_DIR

SEQ, BEFORE, AFTER, TOP_K = 12, 4, 3, 5


@functools.cache
def oracle(data_text: str, kind: str):
    """(windows [(id, ids)], acts {layer: (N_windows, SEQ, F) tensor, zero at BOS and beyond the window})."""
    model_dir = ZOO_DIR / "toyworld" / "model"
    hf = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tc = load_transcoders(ZOO_DIR / "toyworld" / kind)
    docs = [line for line in data_text.splitlines() if line.strip()]
    windows = []
    for doc in docs:
        ids = tok(doc, add_special_tokens=False)["input_ids"]
        for s in range(0, len(ids), SEQ - 1):
            windows.append([tok.bos_token_id] + ids[s : s + SEQ - 1])
    L = tc.n_layers
    acts = {l: torch.zeros(len(windows), SEQ, tc.width(l)) for l in range(L)}
    seen = {}
    hooks = [hf.model.layers[l].post_attention_layernorm.register_forward_pre_hook(
        lambda m, args, l=l: seen.__setitem__(l, args[0][0])) for l in range(L)]  # fmt: skip
    with torch.no_grad():
        for w, ids in enumerate(windows):
            hf(input_ids=torch.tensor([ids]))
            for l in range(L):
                pre = seen[l] @ tc.W_enc[l].T + tc.b_enc[l]
                a = pre * (pre > tc.threshold[l])
                a[0] = 0  # BOS
                acts[l][w, : len(ids)] = a
    for h in hooks:
        h.remove()
    return windows, acts


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_statistics_equal_brute_force(kind, data_file, plt_dir, clt_dir):
    out = {"plt": plt_dir, "clt": clt_dir}[kind]
    windows, acts = oracle(data_file.read_text(), kind)
    n_tokens = sum(len(w) - 1 for w in windows)
    rng = torch.Generator().manual_seed(0)
    for layer in range(4):
        A = acts[layer]  # (W, S, F)
        count = (A > 0).sum((0, 1))
        alive = count.nonzero().squeeze(1)
        # every busy feature, and a random sample of the others (dead ones included)
        chosen = set(count.topk(8).indices.tolist()) | set(
            alive[torch.randperm(len(alive), generator=rng)[:12]].tolist()
        )
        chosen |= set((count == 0).nonzero().squeeze(1)[:2].tolist())
        for f in sorted(chosen):
            d = load_dashboard(out, layer, f)
            assert d.n_tokens == n_tokens
            assert d.count == int(count[f]), (layer, f)
            a = A[:, :, f]
            values = a[a > 0].double()
            # histogram: exactly the counts of the format's fixed edges
            lo = 0.0
            full = []
            for e in EDGES.tolist() + [math.inf]:
                full.append(int(((values >= lo) & (values < e)).sum()))
                lo = e
            nz = [i for i, c in enumerate(full) if c]
            assert d.histogram_counts == (full[nz[0] : nz[-1] + 1] if nz else []), (layer, f)
            if not nz:
                assert d.bands[0].examples == [] and d.max == 0
                continue
            assert d.mean == pytest.approx(float(values.mean()), rel=1e-5)
            # quantiles within one histogram bin
            sorted_v = values.sort().values
            for q, v in d.quantiles.items():
                true = float(sorted_v[max(0, math.ceil(q * len(sorted_v)) - 1)])
                b_true, b_dash = torch.bucketize(torch.tensor([true, v], dtype=torch.float64), EDGES, right=True)
                assert abs(int(b_true) - int(b_dash)) <= 1, (layer, f, q, true, v)
            # top examples: one per window, at its max token, by (value desc, window asc). The oracle's
            # unbatched forward differs from the batched one by float rounding, so exact ties (the same
            # sentence in two windows) may resolve either way: values must match, and no window left out
            # may beat the last one kept.
            best, arg = a.max(1)
            cands = sorted((-float(best[w]), w, int(arg[w])) for w in range(len(windows)) if best[w] > 0)[:TOP_K]
            top = d.top_examples
            assert len(top) == len(cands)
            for e, (v, _, _) in zip(top, cands):
                assert e.value == pytest.approx(-v, rel=1e-5, abs=1e-6), (layer, f)
            kept = {e.window for e in top}
            assert all(
                float(best[w]) <= top[-1].value * (1 + 1e-5) + 1e-6 for w in range(len(windows)) if w not in kept
            )
            strict = [(w, p) for v, w, p in cands if all(abs(v - u) > 1e-4 for u, w2, _ in cands if w2 != w)]
            assert set(strict) <= {(e.window, e.position) for e in top}, (layer, f)
            for e in top:
                w, p = e.window, e.position
                assert float(a[w, p]) == pytest.approx(float(best[w]), rel=1e-5)
                lo_p, hi_p = max(0, p - BEFORE), min(len(windows[w]), p + AFTER + 1)
                assert e.token_ids == windows[w][lo_p:hi_p]
                assert e.max_index == p - lo_p
                torch.testing.assert_close(torch.tensor(e.acts), a[w, lo_p:hi_p], rtol=1e-5, atol=1e-6)
            # band examples: real activations of this feature, inside their band's range
            for band in d.bands[1:]:
                for e in band.examples:
                    assert e.value == pytest.approx(float(a[e.window, e.position]), rel=1e-5)
                    assert band.low <= e.value <= band.high
                    assert (e.window, e.position) not in {(t.window, t.position) for t in top}
            # logit effects: the existing decoder read-out
            if layer == 0 and f == sorted(chosen)[0]:
                model = ReplacementModel.from_pretrained("toyworld", f"toyworld-{kind}")
                logits = decoder_logits(model, layer, f)
                want = [model.tokenizer.decode([t]) for t in logits.topk(len(d.top_logits)).indices.tolist()]
                assert [t for t, _ in d.top_logits] == want
