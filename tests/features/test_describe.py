"""Automatic node descriptions read off the weights."""

import torch
from tiny import tiny_model, tiny_tokenizer

from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.features import decoder_logits, describe_node, promoted_tokens
from circuit_atlas.transcoders.random import random_transcoders


def test_decoder_logits_and_descriptions():
    tok = tiny_tokenizer()
    hf = tiny_model("gemma2", tokenizer=tok)  # Gemma: the final norm gain is 1 + weight
    cfg = hf.config
    model = ReplacementModel(hf, tok, random_transcoders("clt", cfg.num_hidden_layers, cfg.hidden_size, 16))
    # A CLT feature's writes to all its output layers are summed, then read through gain and W_U.
    d = model.transcoders.W_dec[0][3].sum(0)
    expected = hf.lm_head.weight @ (d * (1 + hf.model.norm.weight))
    assert torch.allclose(decoder_logits(model, 0, 3), expected, atol=1e-5)
    top = expected.topk(2).indices.tolist()
    assert promoted_tokens(model, 0, 3, k=2) == [tok.decode([t]) for t in top]

    g = attribute(model, "the capital of", progress=False)
    kinds = g.nodes.kind.tolist()
    text = {k: describe_node(model, g, kinds.index(k)) for k in ("feature", "error", "embedding", "logit")}
    assert text["feature"].startswith("feature L") and "promotes" in text["feature"]
    assert text["error"].startswith("MLP ") and "reconstruction error" in text["error"]
    assert text["embedding"] == "token embedding '<bos>'"
    assert text["logit"] == f"logit {g.logit_labels[0]!r}"


def test_descriptions_show_byte_pieces_as_bytes():
    """A promoted token that is only part of a character prints as <0x..> bytes, never as '\\ufffd'."""
    import circuit_atlas as ca
    from circuit_atlas.features.describe import decoder_logits, describe_node

    model = ca.ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    graph = ca.attribute(model, "The capital of the state containing Dallas is", progress=False)
    seen = 0
    for i in range(graph.n_nodes):
        if int(graph.kind[i]) != 0:
            continue
        layer, feature = int(graph.layer[i]), int(graph.feature[i])
        top = decoder_logits(model, layer, feature).topk(4).indices.tolist()
        text = describe_node(model, graph, i)
        assert "\ufffd" not in text, text
        seen += any("\ufffd" in model.tokenizer.decode([t]) for t in top) and "<0x" in text
    assert seen > 0  # the toy world has such features: the check above ran on some
