"""The attribution engine against the independent float64 oracle (tests/oracle.py).

Oracle self-tests (no engine): the frozen replacement model reproduces the clean run and is
affine, rows conserve (sum of edges + constant = value), columns equal interventions.

Engine tests, per case (architecture x transcoder kind x skip x activation x hook sites):
- graph nodes == oracle nodes (same feature triples, activations to 1e-4, errors, embeddings,
  logit targets chosen by the documented rule) and the WHOLE dense adjacency agrees to a
  relative Frobenius error <= 1e-5 (and every (target kind, source kind) block to <= 1e-4);
- conservation on the engine's own FrozenModel (and its constant == the oracle's);
- intervention: adding a source's contribution once more to FrozenModel.run moves every
  target by that source's column;
- the FrozenModel is affine (Jacobian equal at two points, zero Hessian), reproduces clean
  values, and equals the oracle's frozen model off the clean point;
- partial graphs (max_feature_nodes) have exactly the full graph's rows.

Conservation constant. The frozen model is affine, so for every target t
    value_t = sum_s A[t, s] + const_t,
where value_t is the clean pre-activation minus b_enc (feature) or the demeaned pre-softcap logit
at the last position (logit), and const_t is the frozen model's output with every source
removed: all token-embedding contributions zero (BOS included, it is a node), and at each layer
and position p >= 1 the MLP output replaced by its non-node part b_dec[l] + skip_l(x_in live)
(i.e. mlp_delta[l, p] = b_dec[l] + skip_l(x_clean[l, p]) - mlp_out_clean[l, p]), while the BOS
position keeps its clean MLP output (it belongs to no node). What remains in const_t is: GPT-2's
learned positional embeddings, all attention / norm / output biases, b_dec, the live skip path
fed by those constants, and everything the BOS MLP outputs carry through frozen attention.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oracle import F64, OracleModel, _skip_fn, oracle_adjacency, transcoders_f64  # noqa: E402
from tiny import ARCHS, PROMPT, prompt_ids, tiny_model, tiny_tokenizer, tiny_transcoders  # noqa: E402

MAX_N_LOGITS = 5
DESIRED_PROB = 0.99
KIND_NAMES = ("feature", "error", "embedding", "logit")

# (arch, kind, skip, activation, input_hook, output_hook)
MAIN_CASES = [
    (arch, kind, skip, "jumprelu", "hook_resid_mid", "hook_mlp_out")
    for arch in ARCHS
    for kind, skip in (("plt", False), ("clt", False), ("plt", True), ("clt", True))
]
EXTRA_CASES = [
    ("gemma2", "plt", False, "jumprelu", "ln2.hook_normalized", "hook_mlp_out"),  # GemmaScope layout
    ("gemma2", "clt", True, "jumprelu", "mlp.hook_in", "mlp.hook_out"),
    ("gemma2", "plt", True, "topk", "mlp.hook_in", "mlp.hook_out"),
    ("gpt2", "plt", True, "jumprelu", "ln2.hook_normalized", "hook_mlp_out"),
    ("gpt2", "clt", False, "relu", "mlp.hook_in", "mlp.hook_out"),
    ("qwen3", "plt", False, "topk", "mlp.hook_in", "mlp.hook_out"),  # Qwen3 PLT layout
    ("llama", "plt", True, "topk", "hook_resid_mid", "mlp.hook_out"),
    ("qwen2", "clt", False, "relu", "ln2.hook_normalized", "hook_mlp_out"),
]
ALL_CASES = MAIN_CASES + EXTRA_CASES


def case_id(case) -> str:
    arch, kind, skip, act, ih, oh = case
    return f"{arch}-{kind}{'+skip' if skip else ''}-{act}-{ih}->{oh}"


def _engine():
    try:
        from circuit_atlas import ReplacementModel, attribute
    except ImportError as exc:  # engine not landed yet
        pytest.skip(f"engine not importable: {exc}")
    return ReplacementModel, attribute


@functools.cache
def tokenizer():
    return tiny_tokenizer()


@functools.cache
def pristine(arch: str):
    """(hf float32 model, OracleModel) — the HF model is never handed to the engine itself."""
    hf = tiny_model(arch, 0, tokenizer=tokenizer())
    return hf, OracleModel(hf)


@functools.cache
def transcoders_for(case):
    arch, kind, skip, act, ih, oh = case
    hf, _ = pristine(arch)
    seed = ALL_CASES.index(case) if case in ALL_CASES else 99
    return tiny_transcoders(hf, kind, skip, act, ih, oh, prompt_ids(tokenizer()), seed=seed)


@functools.cache
def engine_case(case):
    """Engine model + full graph + oracle adjacency for the graph's logit targets."""
    ReplacementModel, attribute = _engine()
    arch = case[0]
    hf, om = pristine(arch)
    tc = transcoders_for(case)
    model = ReplacementModel(copy.deepcopy(hf), tokenizer(), copy.deepcopy(tc), dtype=torch.float32)
    t0 = time.perf_counter()
    graph = attribute(model, PROMPT, max_n_logits=MAX_N_LOGITS, desired_logit_prob=DESIRED_PROB, progress=False)
    t_engine = time.perf_counter() - t0
    t0 = time.perf_counter()
    oracle = oracle_adjacency(hf, tc, graph.input_ids, [int(t) for t in graph.logit_token_ids], oracle=om)
    t_oracle = time.perf_counter() - t0
    return {
        "model": model,
        "graph": graph,
        "oracle": oracle,
        "tc": tc,
        "hf": hf,
        "om": om,
        "t_engine": t_engine,
        "t_oracle": t_oracle,
    }


def _labels(o) -> list[str]:
    out = [f"feat:{l}:{p}:{f}" for l, p, f in o["features"].tolist()]
    out += [f"err:{l}:{p}" for l, p in o["errors"].tolist()]
    out += [f"emb:{p}" for p in o["embeddings"].tolist()]
    out += [f"logit:{t}" for t in o["logits"].tolist()]
    return out


def _block_report(A_e: torch.Tensor, A_o: torch.Tensor, kinds: torch.Tensor, labels: list[str]) -> tuple[dict, str]:
    total = float(A_o.norm())
    rel = {}
    lines = []
    for tk in (0, 3):
        for sk in (0, 1, 2):
            r = kinds == tk
            s = kinds == sk
            if not r.any() or not s.any():
                continue
            Be, Bo = A_e[r][:, s], A_o[r][:, s]
            diff = (Be - Bo).norm()
            denom = max(float(Bo.norm()), 1e-6 * total)
            rel[f"{KIND_NAMES[tk]}<-{KIND_NAMES[sk]}"] = float(diff) / denom
            D = (Be - Bo).abs()
            i, j = divmod(int(D.argmax()), D.shape[1])
            ri = r.nonzero().flatten()[i]
            sj = s.nonzero().flatten()[j]
            lines.append(
                f"  {KIND_NAMES[tk]:>7} <- {KIND_NAMES[sk]:<9} rel={float(diff) / denom:.3e} |oracle|={float(Bo.norm()):.3e} "
                f"max|diff|={float(D.max()):.3e} at [{labels[ri]} <- {labels[sj]}] "
                f"engine={float(A_e[ri, sj]):.6g} oracle={float(A_o[ri, sj]):.6g}"
            )
    # anything outside the (feature|logit) x (feature|error|embedding) blocks must be zero
    outside = torch.ones_like(A_o, dtype=torch.bool)
    for tk in (0, 3):
        for sk in (0, 1, 2):
            outside[(kinds == tk)[:, None] & (kinds == sk)[None, :]] = False
    extra = float(A_e[outside].abs().max()) if outside.any() else 0.0
    rel["outside"] = extra
    lines.append(f"  entries outside the source/target blocks: max|engine|={extra:.3e}")
    return rel, "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Oracle self-tests
# ----------------------------------------------------------------------------------------
ORACLE_SELF_CASES = [
    (arch, "clt", True, "jumprelu", ih, oh)
    for arch in ARCHS
    for ih, oh in (("hook_resid_mid", "hook_mlp_out"), ("ln2.hook_normalized", "mlp.hook_out"))
] + [("gemma2", "plt", True, "topk", "mlp.hook_in", "mlp.hook_out")]


@pytest.mark.parametrize("case", ORACLE_SELF_CASES, ids=case_id)
def test_oracle_frozen_model(case):
    """Oracle frozen model: reproduces the clean run, is affine, conserves, columns = interventions."""
    arch = case[0]
    hf, om = pristine(arch)
    ids = prompt_ids(tokenizer())
    tc = transcoders_for(case)
    clean = om.clean(ids)
    top = torch.softmax(clean.logits[-1], -1).topk(3).indices.tolist()
    o = oracle_adjacency(hf, tc, ids, top, oracle=om)
    f = o["frozen"]
    L, T, d = clean.resid_mid.shape
    zeros = torch.zeros(L, T, d, dtype=F64)
    x, z, lp = f(clean.emb, zeros)
    assert (x - clean.input_site(case[4])).abs().max() < 1e-12
    assert (z - clean.final_z).abs().max() < 1e-12
    assert (lp - clean.logits_pre).abs().max() < 1e-12
    # transcoder bookkeeping: BOS is no node, reconstruction + error = true output, and the
    # oracle's own encoder/activation/reconstruction agree with circuit_atlas.Transcoders
    st = o["state"]
    t64 = o["transcoders"]
    xs = st["x_in"]
    lib_acts = []
    for l in range(L):
        a = t64.activate(l, t64.encode(l, xs[l])).clone()
        a[0] = 0
        lib_acts.append(a)
        assert torch.equal(a != 0, st["acts"][l] != 0)
        assert (a - st["acts"][l]).abs().max() < 1e-12
    assert (t64.reconstruct(lib_acts, xs) - st["recon"]).abs().max() < 1e-12
    assert all(float(a[0].abs().max()) == 0 for a in st["acts"])
    site = clean.output_site(case[5])
    assert (st["recon"][:, 1:] + st["errors"][:, 1:] - site[:, 1:]).abs().max() < 1e-12
    # ~30-50 % of (feature, position>=1) pairs active, well clear of the thresholds
    n_active = o["features"].shape[0]
    frac = n_active / sum(tc.width(l) * (T - 1) for l in range(L))
    assert 0.2 <= frac <= 0.55, frac
    # affine: equal finite differences at two random points, zero second differences
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    e1, e2, de = rnd(T, d), rnd(T, d) * 3, rnd(T, d)
    i1, i2, di = rnd(L, T, d), rnd(L, T, d) * 3, rnd(L, T, d)
    for a, b in zip(
        [u - v for u, v in zip(f(e1 + de, i1 + di), f(e1, i1))],
        [u - v for u, v in zip(f(e2 + de, i2 + di), f(e2, i2))],
    ):
        assert (a - b).abs().max() < 1e-9 * (1 + a.abs().max())
    for a, b, c in zip(f(e1 + de, i1 + di), f(e1 - de, i1 - di), f(e1, i1)):
        assert (a + b - 2 * c).abs().max() < 1e-9 * (1 + c.abs().max())
    # conservation: row sums + constants = values (features and logits)
    A = o["adjacency"]
    rows = (o["kinds"] == 0) | (o["kinds"] == 3)
    resid = A[rows].sum(1) + o["constants"][rows] - o["values"][rows]
    assert resid.abs().max() < 1e-9, float(resid.abs().max())
    # columns = interventions (adding a source's contribution once more), all sources
    Si, Se = o["source_inj"], o["source_emb"]
    nF = o["features"].shape[0]
    enc = torch.stack([o["transcoders"].W_enc[l][fi] for l, p, fi in o["features"].tolist()])
    U = om.w.W_U
    V = (U - U.mean(0))[o["logits"]]
    feats = o["features"]
    base_x, base_z, _ = f(clean.emb, zeros)

    def targets(xx, zz):
        return torch.cat([(xx[feats[:, 0], feats[:, 1]] * enc).sum(-1), V @ zz[T - 1]])

    base = targets(base_x, base_z)
    cols = torch.randperm(o["n_sources"], generator=g)[:40].tolist() + list(range(nF, o["n_sources"], 7))
    row_idx = rows.nonzero().flatten()
    for j in cols:
        xx, zz, _ = f(clean.emb + Se[j], Si[j])
        delta = targets(xx, zz) - base
        assert (delta - A[row_idx, j]).abs().max() < 1e-9 * (1 + delta.abs().max()), j


def test_oracle_adjacency_sensitive_to_conventions():
    """The oracle's adjacency changes when a convention changes (guards against vacuous tests)."""
    case = ("gemma2", "plt", True, "jumprelu", "ln2.hook_normalized", "mlp.hook_out")
    hf, om = pristine("gemma2")
    ids = prompt_ids(tokenizer())
    tc = transcoders_for(case)
    A = oracle_adjacency(hf, tc, ids, [5, 6], oracle=om)["adjacency"]
    tc2 = copy.deepcopy(tc)
    tc2.output_hook = "hook_mlp_out"
    A2 = oracle_adjacency(hf, tc2, ids, [5, 6], oracle=om)["adjacency"]
    assert A.shape != A2.shape or (A - A2).norm() > 1e-3 * A.norm()
    tc3 = copy.deepcopy(tc)
    tc3.W_skip = None
    A3 = oracle_adjacency(hf, tc3, ids, [5, 6], oracle=om)["adjacency"]
    assert A.shape != A3.shape or (A - A3).norm() > 1e-3 * A.norm()


# ----------------------------------------------------------------------------------------
# Engine vs oracle
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ALL_CASES, ids=case_id)
def test_graph_matches_oracle(case):
    c = engine_case(case)
    g, o = c["graph"], c["oracle"]
    ids = prompt_ids(tokenizer())
    assert torch.equal(g.input_ids.cpu().long(), ids), (g.input_ids, ids)
    kinds = g.kind.long().cpu()
    counts_e = [int((kinds == k).sum()) for k in range(4)]
    counts_o = [int((o["kinds"] == k).sum()) for k in range(4)]
    # --- features --------------------------------------------------------------------
    fm = kinds == 0
    gf = torch.stack([g.layer[fm], g.position[fm], g.feature[fm]], 1).long().cpu()
    se, so = set(map(tuple, gf.tolist())), set(map(tuple, o["features"].tolist()))
    assert se == so, (
        f"feature node sets differ: engine {len(se)}, oracle {len(so)}; "
        f"engine-only {sorted(se - so)[:10]}, oracle-only {sorted(so - se)[:10]}"
    )
    assert torch.equal(gf, o["features"]), "feature nodes not sorted by (layer, position, feature)"
    torch.testing.assert_close(g.activation[fm].double().cpu(), o["activations"], atol=1e-4, rtol=1e-4)
    assert counts_e == counts_o, f"node counts (feature, error, embedding, logit): engine {counts_e} oracle {counts_o}"
    assert torch.equal(kinds, o["kinds"]), "node kinds are not in Graph order"
    # --- errors, embeddings ------------------------------------------------------------
    em = kinds == 1
    ge = torch.stack([g.layer[em], g.position[em]], 1).long().cpu()
    assert torch.equal(ge, o["errors"]), "error nodes differ (expected layer-major over positions >= 1)"
    bm = kinds == 2
    assert torch.equal(g.position[bm].long().cpu(), o["embeddings"])
    assert torch.equal(g.feature[bm].long().cpu(), ids), "embedding nodes should carry their token ids"
    assert bool((g.layer[bm] == -1).all())
    # --- logit targets: top tokens by post-softcap probability, until cumulative >= desired --
    probs = torch.softmax(c["om"].clean(ids).logits[-1], -1)
    sp, si = probs.sort(descending=True)
    n = min(MAX_N_LOGITS, int((sp.cumsum(0) < DESIRED_PROB).sum()) + 1)
    assert [int(t) for t in g.logit_token_ids] == si[:n].tolist()
    lm = kinds == 3
    torch.testing.assert_close(g.activation[lm].double().cpu(), sp[:n], atol=1e-5, rtol=1e-4)
    assert bool((g.layer[lm] == g.n_layers).all()) and bool((g.position[lm] == len(ids) - 1).all())
    # --- rows: every feature and every logit -----------------------------------------
    expected_rows = torch.cat([fm.nonzero().flatten(), lm.nonzero().flatten()])
    assert torch.equal(g.row_nodes.long().cpu().sort().values, expected_rows)
    # --- the whole dense adjacency -----------------------------------------------------
    A_e = g.adjacency.double().cpu()
    A_o = o["adjacency"]
    rel = float((A_e - A_o).norm() / A_o.norm())
    blocks, report = _block_report(A_e, A_o, kinds, _labels(o))
    msg = (
        f"{case_id(case)}: relative Frobenius error {rel:.3e} (engine {c['t_engine']:.2f}s, oracle "
        f"{c['t_oracle']:.2f}s)\n{report}"
    )
    assert rel <= 1e-5, msg
    assert blocks.pop("outside") == 0.0, msg
    assert max(blocks.values()) <= 1e-4, msg


def _engine_targets(frozen_out, feats, enc, V_logit, T):
    x, _, lp = frozen_out
    x = x.double()
    lp = lp.double()
    f_val = (x[feats[:, 0], feats[:, 1]] * enc).sum(-1)
    last = lp[T - 1]
    return torch.cat([f_val, last[V_logit] - last.mean()])


def _row_setup(c):
    g = c["graph"]
    tc = c["tc"]
    kinds = g.kind.long().cpu()
    rows = g.row_nodes.long().cpu()
    rk = kinds[rows]
    feats_rows = rows[rk == 0]
    feats = torch.stack([g.layer[feats_rows], g.position[feats_rows], g.feature[feats_rows]], 1).long().cpu()
    enc = torch.stack([tc.W_enc[l][f].double() for l, p, f in feats.tolist()]) if len(feats) else None
    logit_ids = torch.as_tensor([int(t) for t in g.feature[rows[rk == 3]]]).long()
    # the returned target vector is ordered [feature rows..., logit rows...]
    order = torch.cat([rows[rk == 0], rows[rk == 3]])
    return feats, enc, logit_ids, order


@pytest.mark.parametrize("case", ALL_CASES, ids=case_id)
def test_conservation_engine(case):
    c = engine_case(case)
    g, o, model, tc = c["graph"], c["oracle"], c["model"], c["tc"]
    ids = g.input_ids.cpu().long()
    T = ids.shape[0]
    with torch.no_grad():
        fr = model.freeze(ids)
        x = fr.feature_inputs.double().cpu()
        mo = fr.mlp_outputs.double().cpu()
        L, _, d = x.shape
        delta = torch.zeros(L, T, d, dtype=F64)
        for l in range(L):
            keep = tc.b_dec[l].double().expand(T, d).clone()
            if tc.W_skip is not None:
                keep = keep + x[l] @ tc.W_skip[l].double().T
            delta[l, 1:] = (keep - mo[l])[1:]
        dt = fr.embeddings.dtype
        feats, enc, logit_ids, order = _row_setup(c)
        value = _engine_targets(fr.run(fr.embeddings, torch.zeros(L, T, d, dtype=dt)), feats, enc, logit_ids, T)
        const = _engine_targets(fr.run(torch.zeros_like(fr.embeddings), delta.to(dt)), feats, enc, logit_ids, T)
    A = g.adjacency.double().cpu()[order]
    rowsum = A.sum(1)
    scale = A.abs().sum(1) + value.abs() + const.abs()
    resid = (rowsum + const - value).abs()
    bad = resid > 1e-5 * scale + 1e-5
    labels = _labels(o)
    assert not bad.any(), (
        f"{int(bad.sum())}/{len(bad)} rows violate sum(edges)+const=value; worst "
        f"{labels[int(order[resid.argmax()])]}: sum={float(rowsum[resid.argmax()]):.6g} "
        f"const={float(const[resid.argmax()]):.6g} value={float(value[resid.argmax()]):.6g}"
    )
    # the engine's frozen model agrees with the oracle on both values and constants
    torch.testing.assert_close(value, o["values"][order], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(const, o["constants"][order], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", ALL_CASES, ids=case_id)
def test_intervention_engine(case):
    """Adding a source's contribution once more moves every target by the source's column."""
    c = engine_case(case)
    g, o, model, tc = c["graph"], c["oracle"], c["model"], c["tc"]
    ids = g.input_ids.cpu().long()
    T = ids.shape[0]
    kinds = g.kind.long().cpu()
    gen = torch.Generator().manual_seed(ALL_CASES.index(case))
    pick = lambda mask, k: mask.nonzero().flatten()[torch.randperm(int(mask.sum()), generator=gen)[:k]].tolist()  # noqa: E731
    sources = pick(kinds == 0, 4) + pick(kinds == 1, 3) + pick(kinds == 2, 2) + [int((kinds == 2).nonzero()[0])]
    feats, enc, logit_ids, order = _row_setup(c)
    A = g.adjacency.double().cpu()[order]
    labels = _labels(o)
    with torch.no_grad():
        fr = model.freeze(ids)
        dt = fr.embeddings.dtype
        emb = fr.embeddings
        L, _, d = fr.mlp_outputs.shape
        zeros = torch.zeros(L, T, d, dtype=dt)
        base = _engine_targets(fr.run(emb, zeros), feats, enc, logit_ids, T)
        # error vectors from the public quantities: true output - reconstruction, BOS zeroed
        xin = fr.feature_inputs.float().cpu()
        acts = []
        for l in range(L):
            a = tc.activate(l, tc.encode(l, xin[l])).clone()
            a[0] = 0
            acts.append(a)
        err = fr.mlp_outputs.float().cpu() - tc.reconstruct(acts, xin)
        for s in sources:
            k, l, p, f = int(kinds[s]), int(g.layer[s]), int(g.position[s]), int(g.feature[s])
            e2, dl = emb.clone(), torch.zeros(L, T, d, dtype=torch.float32)
            if k == 0:
                a = float(g.activation[s])
                dec = tc.W_dec[l][f]
                dl[l : l + dec.shape[0], p] = a * dec
            elif k == 1:
                dl[l, p] = err[l, p]
            else:
                e2[p] = emb[p] * 2
            out = _engine_targets(fr.run(e2, dl.to(dt)), feats, enc, logit_ids, T)
            delta = out - base
            col = A[:, s]
            tol = 1e-4 * (1 + base.abs().max()) + 1e-3 * col.abs()
            bad = (delta - col).abs() > tol
            assert not bad.any(), (
                f"source {labels[s]}: {int(bad.sum())}/{len(bad)} targets differ; worst "
                f"{labels[int(order[(delta - col).abs().argmax()])]} delta={float(delta[(delta - col).abs().argmax()]):.6g} "
                f"column={float(col[(delta - col).abs().argmax()]):.6g}"
            )


# ----------------------------------------------------------------------------------------
# FrozenModel linearity (float64 engine)
# ----------------------------------------------------------------------------------------
FREEZE_CASES = [
    (arch, kind, True, "jumprelu", ih, oh)
    for arch in ARCHS
    for kind, ih, oh in (("plt", "hook_resid_mid", "hook_mlp_out"), ("clt", "ln2.hook_normalized", "mlp.hook_out"))
]


@pytest.mark.parametrize("case", FREEZE_CASES, ids=case_id)
def test_frozen_model_linear(case):
    ReplacementModel, _ = _engine()
    arch = case[0]
    hf, om = pristine(arch)
    tc = transcoders_for(case)
    ids = prompt_ids(tokenizer())
    model = ReplacementModel(copy.deepcopy(hf).double(), tokenizer(), transcoders_f64(tc), dtype=torch.float64)
    fr = model.freeze(ids)
    clean = om.clean(ids)
    L, T, d = clean.resid_mid.shape
    # --- clean values and the documented FrozenModel fields ---------------------------------
    with torch.no_grad():
        x, zf, lp = fr.run(fr.embeddings, torch.zeros(L, T, d, dtype=torch.float64))
        ref32 = copy.deepcopy(hf)(ids[None]).logits[0].double()
    assert x.dtype == torch.float64
    # (1e-6: Gemma-2's normalizer sqrt(d) is float32-rounded by HF for the float32 model the oracle
    # reads, but may be exact for this float64 engine model)
    torch.testing.assert_close(
        fr.embeddings.double(),
        clean.emb,
        atol=0,
        rtol=1e-6,
        msg=lambda m: f"FrozenModel.embeddings != token-embedding contributions: {m}",
    )
    torch.testing.assert_close(fr.feature_inputs.double(), clean.input_site(case[4]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fr.mlp_outputs.double(), clean.output_site(case[5]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.double(), fr.feature_inputs.double(), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(lp.double(), clean.logits_pre, atol=1e-5, rtol=1e-5)
    cap = getattr(hf.config, "final_logit_softcapping", None)
    post = torch.tanh(lp / cap) * cap if cap else lp
    torch.testing.assert_close(post.double(), ref32, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(post.double(), model.logits(ids).double(), atol=1e-10, rtol=1e-10)

    # --- affine: equal finite differences at two points, zero second differences -----------
    g = torch.Generator().manual_seed(1)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    es, ms = float(clean.emb.std()), float(clean.output_site(case[5]).std())
    e1, e2, de = rnd(T, d) * es, rnd(T, d) * es * 3, rnd(T, d) * es
    d1, d2, dd = rnd(L, T, d) * ms, rnd(L, T, d) * ms * 3, rnd(L, T, d) * ms
    with torch.no_grad():
        F1 = [u - v for u, v in zip(fr.run(e1 + de, d1 + dd), fr.run(e1, d1))]
        F2 = [u - v for u, v in zip(fr.run(e2 + de, d2 + dd), fr.run(e2, d2))]
        for name, a, b in zip(("feature_inputs", "final_resid", "logits"), F1, F2):
            assert (a - b).abs().max() < 1e-9 * (1 + a.abs().max()), f"{name}: not affine"
        for name, a, b, c0 in zip(
            ("feature_inputs", "final_resid", "logits"),
            fr.run(e1 + de, d1 + dd),
            fr.run(e1 - de, d1 - dd),
            fr.run(e1, d1),
        ):
            assert (a + b - 2 * c0).abs().max() < 1e-9 * (1 + c0.abs().max()), f"{name}: second difference"
        # the engine's frozen model equals the oracle's frozen model off the clean point
        f = om.frozen_fn(clean, case[4], case[5], _skip_fn(transcoders_f64(tc)))
        for name, a, b in zip(("feature_inputs", "final_resid", "logits"), fr.run(e2, d2), f(e2, d2)):
            torch.testing.assert_close(
                a.double(),
                b,
                atol=1e-5 * (1 + float(b.abs().max())),
                rtol=1e-5,
                msg=lambda m, name=name: f"{name} off the clean point: {m}",
            )

    # --- Jacobian identical at two points (random vector-Jacobian products) --------------
    def vjps(e0, d0, cot):
        e = e0.clone().requires_grad_(True)
        m = d0.clone().requires_grad_(True)
        outs = fr.run(e, m)
        s = sum((o * c).sum() for o, c in zip(outs, cot))
        ge, gm = torch.autograd.grad(s, (e, m), allow_unused=True)
        ge = torch.zeros_like(e) if ge is None else ge
        gm = torch.zeros_like(m) if gm is None else gm
        return ge, gm

    with torch.no_grad():
        shapes = [t.shape for t in fr.run(e1, d1)]
    for _ in range(3):
        cot = [rnd(*s) for s in shapes]
        a_e, a_m = vjps(e1, d1, cot)
        b_e, b_m = vjps(e2, d2, cot)
        assert a_e.abs().max() > 0 and a_m.abs().max() > 0
        assert (a_e - b_e).abs().max() < 1e-10 * (1 + a_e.abs().max())
        assert (a_m - b_m).abs().max() < 1e-10 * (1 + a_m.abs().max())

    # --- Hessian of the top logit w.r.t. (embeddings, mlp_delta) is zero ------------------
    top = int(clean.logits[-1].argmax())
    e = e1.clone().requires_grad_(True)
    m = d1.clone().requires_grad_(True)
    logit = fr.run(e, m)[2][T - 1, top]
    ge, gm = torch.autograd.grad(logit, (e, m), create_graph=True)
    for _ in range(3):
        v_e, v_m = rnd(T, d), rnd(L, T, d)
        hv_s = (ge * v_e).sum() + (gm * v_m).sum()
        if not hv_s.requires_grad:  # gradient independent of the inputs: Hessian exactly zero
            continue
        he, hm = torch.autograd.grad(hv_s, (e, m), retain_graph=True, allow_unused=True)
        for h in (he, hm):
            assert h is None or h.abs().max() < 1e-6


# ----------------------------------------------------------------------------------------
# Partial graphs
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case",
    [
        ("llama", "plt", False, "jumprelu", "hook_resid_mid", "hook_mlp_out"),
        ("gemma2", "clt", False, "jumprelu", "hook_resid_mid", "hook_mlp_out"),
    ],
    ids=case_id,
)
def test_partial_graph_rows_equal_full(case):
    _, attribute = _engine()
    c = engine_case(case)
    full, model = c["graph"], c["model"]
    k = 150
    part = attribute(
        model,
        PROMPT,
        max_n_logits=MAX_N_LOGITS,
        desired_logit_prob=DESIRED_PROB,
        max_feature_nodes=k,
        batch_size=32,
        progress=False,
    )
    for col in ("kind", "layer", "position", "feature"):
        assert torch.equal(getattr(part, col).long(), getattr(full, col).long()), col
    torch.testing.assert_close(part.activation, full.activation)
    rows = part.row_nodes.long().cpu()
    kinds = part.kind.long().cpu()
    assert int((kinds[rows] == 0).sum()) == k
    assert int((kinds[rows] == 3).sum()) == part.n_logits
    assert len(set(rows.tolist())) == len(rows)
    A_full = full.adjacency.double().cpu()
    E = part.dense_rows().double().cpu()
    ref = A_full[rows, : part.n_sources]
    scale = float(ref.abs().max())
    diff = (E - ref).abs()
    assert float(diff.max()) <= 1e-5 * scale, (
        f"partial rows differ from the full graph's: max|diff|={float(diff.max()):.3e} (scale {scale:.3e})"
    )
    # dense view: non-selected features have no row but keep their columns
    A_part = part.adjacency.double().cpu()
    no_row = torch.ones(part.n_nodes, dtype=torch.bool)
    no_row[rows] = False
    assert float(A_part[no_row].abs().max()) == 0.0
