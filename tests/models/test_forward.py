"""Forward-pass checks: the float64 oracle against Hugging Face, and the engine against both.

HF computes RMSNorm, RoPE tables and the eager softmax in float32 even for a float64 model, so
the oracle is compared (a) with float64 HF to 1e-10 after making those three computations
float64 inside HF (`hf_exact_float64`, test-only monkeypatching of forward methods; same
formulas, no upcast), and (b) with unmodified float64 / float32 HF to their own precision.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oracle import OracleModel  # noqa: E402
from tiny import ARCHS, PROMPT, prompt_ids, save_tiny, tiny_model, tiny_tokenizer, tiny_transcoders  # noqa: E402


def _engine():
    try:
        from circuit_atlas import ReplacementModel
    except ImportError as exc:  # engine not landed yet
        pytest.skip(f"engine not importable: {exc}")
    return ReplacementModel


@contextlib.contextmanager
def hf_exact_float64(model):
    """Make a float64 HF model compute its RMSNorms, RoPE tables and softmax in float64."""
    saved = []
    orig_softmax = torch.nn.functional.softmax

    def softmax(x, dim=None, _stacklevel=3, dtype=None):
        if x.dtype == torch.float64:
            dtype = None
        return orig_softmax(x, dim=dim, dtype=dtype)

    cfg = model.config
    for _, mod in model.named_modules():
        cls = type(mod).__name__
        if cls.endswith("RMSNorm"):
            eps = getattr(mod, "variance_epsilon", getattr(mod, "eps", None))
            gemma = cls.startswith("Gemma")

            def fwd(x, mod=mod, eps=eps, gemma=gemma):
                y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
                return y * (1.0 + mod.weight) if gemma else mod.weight * y

            saved.append((mod, mod.forward))
            mod.forward = fwd
        elif cls.endswith("RotaryEmbedding"):
            hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
            rp = cfg.rope_parameters

            def fwd(x, position_ids, layer_type=None, hd=hd, rp=rp):
                theta = (rp if layer_type is None else rp[layer_type])["rope_theta"]  # Gemma-3: per layer type
                inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
                fr = position_ids[..., None].double() * inv
                e = torch.cat([fr, fr], -1)
                return e.cos().to(x.dtype), e.sin().to(x.dtype)

            saved.append((mod, mod.forward))
            mod.forward = fwd
    torch.nn.functional.softmax = softmax
    try:
        yield model
    finally:
        torch.nn.functional.softmax = orig_softmax
        for mod, f in saved:
            mod.forward = f


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_tokenizer(tok):
    ids = tok(PROMPT)["input_ids"]
    assert tok.bos_token_id not in ids, "the tiny tokenizer must not add BOS itself"
    assert tok.unk_token_id not in ids
    assert len(ids) == len(PROMPT.split())
    assert 60 <= len(tok) <= 120


@pytest.mark.parametrize("arch", ARCHS)
def test_oracle_clean_matches_hf(arch, tok):
    hf = tiny_model(arch, 0, tokenizer=tok)
    ids = prompt_ids(tok)
    om = OracleModel(hf)
    clean = om.clean(ids)
    hf64 = copy.deepcopy(hf).double()
    # capture HF's MLP inputs / outputs and what each block adds to the residual
    caps: dict[str, list] = {"mlp_in": [], "mlp_out": [], "post": []}
    hooks = []
    blocks = hf64.transformer.h if arch == "gpt2" else hf64.model.layers

    def grab_mlp(module, inputs, output):
        caps["mlp_in"].append(inputs[0][0])
        caps["mlp_out"].append(output[0])

    def grab_post(module, inputs, output):
        caps["post"].append(output[0])

    for blk in blocks:
        hooks.append(blk.mlp.register_forward_hook(grab_mlp))
        if arch in ("gemma2", "gemma3"):
            hooks.append(blk.post_feedforward_layernorm.register_forward_hook(grab_post))
    with torch.no_grad(), hf_exact_float64(hf64):
        ref = hf64(ids[None]).logits[0]
    for h in hooks:
        h.remove()
    assert (clean.logits - ref).abs().max() < 1e-10
    L = om.n_layers
    torch.testing.assert_close(clean.mlp_in, torch.stack(caps["mlp_in"]), atol=1e-10, rtol=0)
    torch.testing.assert_close(clean.mlp_out_module, torch.stack(caps["mlp_out"]), atol=1e-10, rtol=0)
    post = torch.stack(caps["post"]) if arch in ("gemma2", "gemma3") else torch.stack(caps["mlp_out"])
    torch.testing.assert_close(clean.mlp_out_resid, post, atol=1e-10, rtol=0)
    # ln2.hook_normalized times the gain (plus bias) is the MLP input
    for l in range(L):
        n2 = om.w.layers[l].norm2
        rebuilt = clean.ln2_normalized[l] * n2.gain + (n2.bias if n2.bias is not None else 0)
        torch.testing.assert_close(rebuilt, clean.mlp_in[l], atol=1e-12, rtol=0)
    # unmodified HF (float32 internals) in float64 and in float32
    with torch.no_grad():
        ref64 = hf64(ids[None]).logits[0]
        ref32 = hf(ids[None]).logits[0]
    assert (clean.logits - ref64).abs().max() < 1e-4
    assert (clean.logits - ref32.double()).abs().max() < 1e-4
    # the attention patterns are far from uniform and the sliding window matters
    assert max(float(p.max(-1).values[..., 3:].mean()) for p in clean.patterns) > 0.4
    if arch in ("gemma2", "gemma3"):
        assert hf.config.sliding_window < len(ids)
        assert float(clean.patterns[0][:, -1, : len(ids) - hf.config.sliding_window].abs().max()) == 0.0
        assert float(clean.patterns[1][:, -1, : len(ids) - hf.config.sliding_window].min()) > 0.0
    if arch == "gemma2":  # the final soft-cap changes the logits noticeably
        assert float((clean.logits - clean.logits_pre).abs().max()) > 0.05


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_logits_match_hf(arch, tok):
    ReplacementModel = _engine()
    hf = tiny_model(arch, 0, tokenizer=tok)
    ids = prompt_ids(tok)
    tc = tiny_transcoders(hf, "plt", False, "jumprelu", "hook_resid_mid", "hook_mlp_out", ids, seed=0)
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
    model = ReplacementModel(copy.deepcopy(hf), tok, copy.deepcopy(tc), dtype=torch.float32)
    assert model.n_layers == hf.config.num_hidden_layers
    assert model.d_model == hf.config.hidden_size
    # API_CONTRACT says a string such as "llama"; accept an object carrying that name too
    assert getattr(model.architecture, "name", model.architecture) == arch
    assert torch.equal(model.tokenize(PROMPT).cpu(), ids)
    assert torch.equal(model.tokenize(ids[1:].tolist()).cpu(), ids)  # BOS prepended
    assert torch.equal(model.tokenize(ids).cpu(), ids)  # BOS already there
    with torch.no_grad():
        out = model.logits(ids)
    assert out.shape == ref.shape
    torch.testing.assert_close(out.float().cpu(), ref, atol=1e-4, rtol=1e-4)
    # float64 engine vs float64 oracle (float32-level agreement; see the precision test below)
    om = OracleModel(hf)
    model64 = ReplacementModel(copy.deepcopy(hf), tok, copy.deepcopy(tc), dtype=torch.float64)
    with torch.no_grad():
        out64 = model64.logits(ids)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.double().cpu(), om.clean(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_float64_is_float64_accurate(arch, tok):
    """With dtype=float64 the engine's forward should agree with the float64 oracle to ~1e-10
    (the oracle equals float64 HF to 1e-10 once HF's own float32 upcasts are removed)."""
    ReplacementModel = _engine()
    hf = tiny_model(arch, 0, tokenizer=tok)
    ids = prompt_ids(tok)
    tc = tiny_transcoders(hf, "plt", False, "jumprelu", "hook_resid_mid", "hook_mlp_out", ids, seed=0)
    clean = OracleModel(hf).clean(ids)
    model64 = ReplacementModel(copy.deepcopy(hf), tok, copy.deepcopy(tc), dtype=torch.float64)
    with torch.no_grad():
        out64 = model64.logits(ids).double().cpu()
    frozen = model64.freeze(ids)
    err = {
        "logits": float((out64 - clean.logits).abs().max()),
        "feature_inputs(resid_mid)": float((frozen.feature_inputs.double().cpu() - clean.resid_mid).abs().max()),
        "mlp_outputs": float((frozen.mlp_outputs.double().cpu() - clean.mlp_out_resid).abs().max()),
    }
    assert max(err.values()) < 1e-9, f"float64 engine vs float64 oracle, max abs differences: {err}"


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3", "gpt2"])
def test_engine_from_pretrained(arch, tok, tmp_path):
    ReplacementModel = _engine()
    path = save_tiny(tmp_path / arch, arch)
    hf = tiny_model(arch, 0, tokenizer=tok)
    ids = prompt_ids(tok)
    tc = tiny_transcoders(hf, "clt", True, "jumprelu", "hook_resid_mid", "hook_mlp_out", ids, seed=0)
    model = ReplacementModel.from_pretrained(path, tc, dtype=torch.float32)
    assert torch.equal(model.tokenize(PROMPT).cpu(), ids)
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
        out = model.logits(ids)
    torch.testing.assert_close(out.float().cpu(), ref, atol=1e-4, rtol=1e-4)
