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
