"""Interventions against independent computations.

- free and frozen-attention runs against the float64 oracle's own live forward (tests/oracle.py
  `steered`), which adds the same decoder deltas at the transcoder output sites;
- fully constrained runs reproduce the attribution graph's edges: setting a source feature to
  twice its activation moves every target's pre-activation (and logit) by exactly its edge;
- generation with the KV cache against Hugging Face's own `generate`, and against recomputing
  the whole sequence at every step;
- one clear error for each kind of bad intervention.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from oracle import OracleModel, _activate, transcoders_f64
from tiny import ARCHS, PROMPT, prompt_ids, tiny_model, tiny_tokenizer, tiny_transcoders

from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.graph.graph import FEATURE, LOGIT
from circuit_atlas.interventions import (
    Feature,
    Supernode,
    constrained,
    scale_by,
    set_to,
)

F64 = torch.float64
CASES = [(arch, kind, skip, "jumprelu", "hook_resid_mid", "hook_mlp_out")
         for arch in ARCHS for kind, skip in (("plt", False), ("clt", True))]  # fmt: skip
CASES += [
    ("gemma2", "clt", True, "jumprelu", "mlp.hook_in", "mlp.hook_out"),
    ("gpt2", "plt", True, "topk", "ln2.hook_normalized", "hook_mlp_out"),
    ("qwen3", "plt", False, "relu", "mlp.hook_in", "mlp.hook_out"),
]


def case_id(case) -> str:
    arch, kind, skip, act, ih, oh = case
    return f"{arch}-{kind}{'+skip' if skip else ''}-{act}-{ih}->{oh}"


@functools.cache
def tokenizer():
    return tiny_tokenizer()


@functools.cache
def setup(case):
    """(float64 engine model, float32 HF model, OracleModel, float64 transcoders, prompt ids)."""
    arch, kind, skip, act, ih, oh = case
    tok = tokenizer()
    hf = tiny_model(arch, 0, tokenizer=tok)
    ids = prompt_ids(tok)
    tc = tiny_transcoders(hf, kind, skip, act, ih, oh, ids, seed=CASES.index(case) if case in CASES else 5)
    model = ReplacementModel(copy.deepcopy(hf), tok, copy.deepcopy(tc), dtype=F64)
    return model, hf, OracleModel(hf), transcoders_f64(tc), ids


def _pick(model, ids):
    """Three interventions over different layers, kinds of value and kinds of position."""
    acts = model.activations(ids)
    L = model.n_layers
    strongest = max(acts.active(0), key=lambda fa: fa[1] if fa[0].position >= 2 else -1)[0]
    mid = acts.active(L // 2)
    mid_f = max(mid, key=lambda fa: fa[1])[0]
    return [
        scale_by(strongest, -1.5),  # a feature, a multiple of its current value
        set_to((L // 2, (mid_f.index + 3) % model.transcoders.width(L // 2)), 4.0, position=slice(3, None)),
        scale_by((L - 1, mid_f.index), 0.0, position="all"),
    ]


def _oracle_steer(tc, interventions, T):
    """The oracle's version: current activation from the live input, target, delta via W_dec."""
    edits = []
    for iv in interventions:
        if isinstance(iv.subject, Feature):
            edits.append((iv.subject.layer, iv.subject.index, [iv.subject.position], iv))
        else:
            layer, index = iv.subject
            pos = list(range(T))[iv.position] if isinstance(iv.position, slice) else list(range(T))
            edits.append((layer, index, pos, iv))

    def steer(l, x_in):
        out = {}
        act = _activate(tc, l, x_in @ tc.W_enc[l].T + tc.b_enc[l])
        for layer, f, positions, iv in edits:
            if layer != l:
                continue
            cur = act[positions, f]
            target = torch.full_like(cur, iv.value) if iv.value is not None else cur * iv.scale
            for j in range(tc.W_dec[l].shape[1]):
                add = out.setdefault(l + j, torch.zeros_like(x_in))
                add[positions] += (target - cur)[:, None] * tc.W_dec[l][f, j]
        return out

    return steer


@pytest.mark.parametrize("mode", ["free", "frozen_attention"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_live_modes_match_oracle(case, mode):
    model, hf, om, tc, ids = setup(case)
    interventions = _pick(model, ids)
    ours = model.intervene(ids, interventions, mode=mode)
    patterns = om.clean(ids).patterns if mode == "frozen_attention" else None
    expected = om.steered(ids, _oracle_steer(tc, interventions, len(ids)), tc.input_hook, tc.output_hook, patterns)
    clean = om.clean(ids).logits
    assert (expected - clean).abs().max() > 1e-3, "the interventions should change the logits"
    torch.testing.assert_close(ours.logits, expected, atol=1e-9, rtol=1e-9)
    # the intervened features report their targets
    f0 = interventions[0].subject
    clean_acts = model.activations(ids)
    assert ours.activations[f0] == pytest.approx(-1.5 * clean_acts[f0])


@pytest.mark.parametrize("case", CASES[:4], ids=case_id)
def test_frozen_attention_differs_from_free(case):
    model, _, _, _, ids = setup(case)
    interventions = _pick(model, ids)[:1]
    free = model.intervene(ids, interventions, mode="free").logits
    frozen = model.intervene(ids, interventions, mode="frozen_attention").logits
    assert (free - frozen).abs().max() > 1e-6
    # no layer constrained: constrained([]) is frozen attention
    torch.testing.assert_close(model.intervene(ids, interventions, mode=constrained([])).logits, frozen)


@pytest.mark.parametrize("mode", ["free", "frozen_attention", "constrained"])
def test_no_interventions_reproduce_hf_logits(mode):
    model, hf, _, _, ids = setup(CASES[0])
    with torch.no_grad():
        expected = hf.double()(ids[None]).logits[0]
    hf.float()
    logits = model.intervene(ids, [], mode=mode).logits
    # HF builds its rotary tables in float32, so float64 agreement with HF is ~1e-6
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, model.logits(ids), atol=1e-10, rtol=1e-10)


# --- constrained mode reproduces the graph's edges --------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fully_constrained_reproduces_edges(case):
    model, _, _, _, ids = setup(case)
    graph = attribute(model, ids, max_n_logits=3, desired_logit_prob=0.9, progress=False)
    A = graph.adjacency.double()
    clean = model.intervene(ids, [], mode="constrained", return_pre_activations=True)
    rows = [int(i) for i in graph.row_nodes]
    sources = [i for i in range(graph.n_nodes) if graph.kind[i] == FEATURE]
    assert len(sources) > 10
    logit_tokens = graph.logit_token_ids
    checked = 0
    for s in sources[:: max(1, len(sources) // 12)]:
        l, p, f = int(graph.layer[s]), int(graph.position[s]), int(graph.feature[s])
        a = float(graph.activation[s])
        run = model.intervene(ids, [set_to(Feature(l, p, f), 2 * a)], mode="constrained", return_pre_activations=True)
        observed, expected = [], []
        for t in rows:
            if graph.kind[t] == FEATURE:
                lt, pt, ft = int(graph.layer[t]), int(graph.position[t]), int(graph.feature[t])
                observed.append(float(run.pre_activations[lt][pt, ft] - clean.pre_activations[lt][pt, ft]))
            else:
                k = int((graph.kind[: t + 1] == LOGIT).sum()) - 1
                tok = int(logit_tokens[k])
                d = run.logits_pre_softcap[-1] - clean.logits_pre_softcap[-1]
                observed.append(float(d[tok] - d.mean()))
            expected.append(float(A[t, s]))
        observed, expected = torch.tensor(observed, dtype=F64), torch.tensor(expected, dtype=F64)
        assert expected.abs().max() > 0 or observed.abs().max() < 1e-9
        torch.testing.assert_close(observed, expected, atol=1e-5 * (1 + float(expected.abs().max())), rtol=1e-4)
        checked += 1
    assert checked >= 8


# --- supernodes --------------------------------------------------------------------------------------
def test_supernode_subject_equals_its_features():
    model, _, _, _, ids = setup(CASES[2])
    active = [f for f, _ in model.activations(ids).active(1) if f.position >= 1][:4]
    group = Supernode("group", active[:2], children=[Supernode("child", active[2:])])
    by_node = model.intervene(ids, [scale_by(group, -2.0)], mode="frozen_attention").logits
    by_feature = model.intervene(ids, [scale_by(f, -2.0) for f in active], mode="frozen_attention").logits
    torch.testing.assert_close(by_node, by_feature)
    assert (by_node - model.logits(ids)).abs().max() > 1e-4


# --- generation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_generate_matches_hf_generate(arch):
    model, hf, _, _, ids = setup((arch, "plt", False, "jumprelu", "hook_resid_mid", "hook_mlp_out"))
    ours = model.generate(ids, max_new_tokens=10)  # both stop at EOS
    hf.double()
    with torch.no_grad():
        theirs = hf.generate(ids[None], max_new_tokens=10, do_sample=False,
                             attention_mask=torch.ones_like(ids[None]), pad_token_id=0)[0, len(ids):]  # fmt: skip
    hf.float()
    assert ours.new_ids.tolist() == theirs.tolist()
    assert len(ours.new_ids) >= 5
    assert ours.logits.shape == (len(ours.new_ids), model.vocab_size)


@pytest.mark.parametrize("case", [CASES[0], CASES[7], CASES[9], CASES[10]], ids=case_id)
def test_generate_with_cache_equals_recomputation(case):
    model, _, _, _, ids = setup(case)
    L = model.n_layers
    acts = model.activations(ids)
    f = max(acts.active(1), key=lambda fa: fa[1])[0]
    interventions = [
        scale_by((1, f.index), 3.0, position=slice(2, None)),  # open-ended: covers generated tokens
        set_to((L - 1, 5), 2.5, position="all"),
    ]
    gen = model.generate(ids, interventions, max_new_tokens=6, stop_at_eos=False, mode="free")
    seq = ids
    for step in range(6):
        full = model.intervene(seq, interventions, mode="free")
        torch.testing.assert_close(gen.logits[step], full.logits[-1], atol=1e-9, rtol=1e-9)
        seq = torch.cat([seq, gen.new_ids[step : step + 1]])
    # activations of the generated positions (the last token's excepted) match too
    full = model.intervene(seq[:-1], interventions, mode="free").activations
    torch.testing.assert_close(gen.activations.dense(1), full.dense(1), atol=1e-9, rtol=1e-9)


def test_generate_positions_past_the_prompt_and_sampling():
    model, _, _, _, ids = setup(CASES[0])
    T = len(ids)
    plain = model.generate(ids, max_new_tokens=5, stop_at_eos=False)
    late = model.generate(ids, [set_to((0, 1), 50.0, position=T + 2)], max_new_tokens=5, stop_at_eos=False)
    # an intervention at generated position T+2 cannot change the tokens drawn before it exists
    assert late.new_ids[:3].tolist() == plain.new_ids[:3].tolist()
    torch.testing.assert_close(late.logits[:3], plain.logits[:3])
    assert not torch.allclose(late.logits[3], plain.logits[3])
    a = model.generate(ids, max_new_tokens=8, temperature=1.5, seed=3, stop_at_eos=False)
    b = model.generate(ids, max_new_tokens=8, temperature=1.5, seed=3, stop_at_eos=False)
    assert a.new_ids.tolist() == b.new_ids.tolist()
    assert a.text == model.tokenizer.decode(a.new_ids.tolist())


# --- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "interventions, message",
    [
        (
            lambda L, W, T: [set_to((L, 0), 1.0, position=1)],
            r"layer 3 does not exist; the transcoders have layers 0\.\.2",
        ),
        (lambda L, W, T: [set_to((0, W), 1.0, position=1)], r"feature 128 does not exist at layer 0"),
        (
            lambda L, W, T: [set_to(Feature(0, T, 1), 1.0)],
            r"position 9 does not exist: the prompt has positions 0\.\.8",
        ),
        (lambda L, W, T: [set_to((0, 1), 1.0, position=-T - 1)], r"position -10 does not exist"),
        (lambda L, W, T: [set_to((0, 1), 1.0, position=slice(5, 2))], r"selects no position"),
        (lambda L, W, T: [set_to((0, 1), 1.0, position="last")], r"position 'last' is not understood"),
        (lambda L, W, T: [set_to((0, 1), 1.0, position=2), scale_by(Feature(0, 2, 1), 0.0)], r"intervened on twice"),
        (lambda L, W, T: [scale_by(Supernode("empty"), 0.0)], r"supernode 'empty' has no features"),
        (lambda L, W, T: [(0, 1, 2, 3.0)], r"expected Intervention objects"),
    ],
)
def test_bad_interventions(interventions, message):
    model, _, _, _, ids = setup(CASES[0])
    L, W, T = model.n_layers, model.transcoders.width(0), len(ids)
    assert (L, W, T) == (3, 128, 9)
    with pytest.raises(ValueError, match=message):
        model.intervene(ids, interventions(L, W, T))


def test_bad_modes_and_specs():
    model, _, _, _, ids = setup(CASES[0])
    with pytest.raises(ValueError, match="unknown mode 'frozen'"):
        model.intervene(ids, [], mode="frozen")
    with pytest.raises(ValueError, match=r"constrained layers \[7\] do not exist"):
        model.intervene(ids, [], mode=constrained([0, 7]))
    with pytest.raises(ValueError, match="exactly one of value="):
        set_to((0, 1), 1.0, position=1).__class__((0, 1), value=1.0, scale=2.0, position=1)
    with pytest.raises(ValueError, match="needs position="):
        set_to((0, 1), 1.0)
    with pytest.raises(ValueError, match="carries its own positions"):
        set_to(Feature(0, 1, 1), 1.0, position=2)
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        model.generate(ids, max_new_tokens=0)
    with pytest.raises(ValueError, match="exceeds the model's context of 64"):
        model.generate(ids, max_new_tokens=60)
    with pytest.raises(ValueError, match=r"position 20 does not exist: the prompt plus generated tokens"):
        model.generate(ids, [set_to((0, 1), 1.0, position=20)], max_new_tokens=5)


def test_prompt_text_and_clean_activations_agree_with_graph():
    model, _, _, _, ids = setup(CASES[1])
    graph = attribute(model, PROMPT, max_n_logits=2, progress=False)
    acts = model.activations(PROMPT)
    for i in range(graph.n_nodes):
        if graph.kind[i] == FEATURE:
            f = Feature(int(graph.layer[i]), int(graph.position[i]), int(graph.feature[i]))
            assert acts[f] == pytest.approx(float(graph.activation[i]), rel=1e-5, abs=1e-6)
