"""The layer-by-layer token report: its last layer is the model's own output, and its feature
column names the active feature with the largest decoder push."""

import pytest
import torch
from tiny import PROMPT, prompt_ids, tiny_model, tiny_tokenizer, tiny_transcoders

from circuit_atlas import ReplacementModel
from circuit_atlas.features.describe import decoder_logits
from circuit_atlas.features.logit_lens import where_tokens_appear


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_last_layer_lens_is_the_models_output(arch):
    tok = tiny_tokenizer()
    hf = tiny_model(arch, 0, tokenizer=tok)
    tc = tiny_transcoders(hf, "clt", True, "jumprelu", prompt_ids=prompt_ids(tok), seed=1)
    model = ReplacementModel(hf, tok, tc, dtype=torch.float64)
    ids = model.tokenize(PROMPT)
    logits = model.logits(ids)
    last = len(ids) - 1
    tokens = ["Austin", "Texas", "the"]
    rows = where_tokens_appear(model, PROMPT, tokens, {"city": last - 1, "is": last})
    assert [r["layer"] for r in rows] == list(range(model.n_layers))
    for t in tokens:
        tid = tok(t, add_special_tokens=False)["input_ids"][0]
        for group, p in (("city", last - 1), ("is", last)):
            expected = int((logits[p] > logits[p, tid]).sum()) + 1
            assert rows[-1][f"rank {t} @ {group}"] == expected
    # the strongest feature really is the argmax of activation x decoder push over active features
    acts = model.activations(ids)
    tid = tok("Austin", add_special_tokens=False)["input_ids"][0]
    for l, row in enumerate(rows):
        pushes = {f: a * float(decoder_logits(model, l, f.index)[tid] - decoder_logits(model, l, f.index).mean())
                  for f, a in acts.active(l) if f.position in (last - 1, last)}  # fmt: skip
        best = max(pushes, key=pushes.get)
        if pushes[best] > 0:
            assert row["top Austin feature"].startswith(f"#{best.index} @ ")
        else:
            assert row["top Austin feature"] == "-"


def test_needs_residual_sites():
    tok = tiny_tokenizer()
    hf = tiny_model("llama", 0, tokenizer=tok)
    tc = tiny_transcoders(hf, "plt", False, "jumprelu", "mlp.hook_in", "mlp.hook_out", prompt_ids(tok), seed=1)
    with pytest.raises(ValueError, match="needs transcoders read at hook_resid_mid"):
        where_tokens_appear(ReplacementModel(hf, tok, tc), PROMPT, ["Austin"], {"is": -1})


def test_bf16_weights_with_float32_compute():
    """Weights stored bf16, computed in float32: the lens, the decoder logits and the logit targets all run in
    float32 and equal the float32 model built on the same bf16-rounded weights (they used to fail on mixed
    dtypes, and the logit directions were bf16-rounded)."""
    from circuit_atlas.attribution.targets import resolve_targets

    tok = tiny_tokenizer()
    hf = tiny_model("llama", 0, tokenizer=tok)
    tc = tiny_transcoders(hf, "clt", True, "jumprelu", prompt_ids=prompt_ids(tok), seed=1)
    hf = hf.to(torch.bfloat16).float()  # bf16-representable weights: storing them bf16 loses nothing more
    mixed = ReplacementModel(hf, tok, tc, dtype=torch.bfloat16, compute_dtype=torch.float32)
    rounded = ReplacementModel(hf, tok, tc, dtype=torch.float32)
    last = len(mixed.tokenize(PROMPT)) - 1
    args = (PROMPT, ["Austin", "the"], {"is": last})
    assert where_tokens_appear(mixed, *args) == where_tokens_appear(rounded, *args)
    d_mixed, d_rounded = decoder_logits(mixed, 1, 3), decoder_logits(rounded, 1, 3)
    assert d_mixed.dtype == torch.float32
    assert torch.allclose(d_mixed, d_rounded, rtol=1e-5, atol=1e-6)
    logits = rounded.logits(rounded.tokenize(PROMPT))[last]
    t_mixed = resolve_targets(mixed, logits, logits, None, 3, 0.95)
    t_rounded = resolve_targets(rounded, logits, logits, None, 3, 0.95)
    for a, b in zip(t_mixed, t_rounded):
        assert a.vector.dtype == torch.float32 and torch.allclose(a.vector, b.vector, rtol=0, atol=1e-7)
