"""Describe a node by what it writes: a feature's decoder read through the unembedding.

decoder_logits(f) = W_U (g ⊙ Σ_j W_dec[f, j]) - the direct logit effect of one unit of the
feature, through the final norm's gain (its data-dependent scale is left out, as in the
"logit lens"). For a CLT feature the writes to every output layer are summed: they all
reach the unembedding through the residual stream.
"""

from __future__ import annotations

import torch

from ..graph.graph import EMBEDDING, ERROR, FEATURE, Graph
from ..models.linear import linear


def decoder_logits(model, layer: int, feature: int) -> torch.Tensor:
    """(V,) direct logit effect of one unit of feature `feature` read at `layer`."""
    w = model.weights
    direction = model.transcoders.W_dec[layer][feature].sum(0) * w.final_norm.gain  # (d,)
    return linear(direction, w.W_U)  # W_U @ direction, in the compute dtype (W_U may be stored bf16)


def promoted_tokens(model, layer: int, feature: int, k: int = 5) -> list[str]:
    """The k tokens a feature's decoder promotes most."""
    top = decoder_logits(model, layer, feature).topk(k).indices.tolist()
    return [model.tokenizer.decode([t]) for t in top]


def describe_node(model, graph: Graph, index: int, k: int = 4) -> str:
    """A short automatic description of node `index` of `graph`."""
    from ..display import display_token, show_text

    kind, layer = int(graph.kind[index]), int(graph.layer[index])
    position, feature = int(graph.position[index]), int(graph.feature[index])
    token = graph.tokens[position] if 0 <= position < len(graph.tokens) else "?"
    if kind == FEATURE:
        top = decoder_logits(model, layer, feature).topk(k).indices.tolist()
        tokens = ", ".join(display_token(model.tokenizer, t) for t in top)  # byte pieces as <0x..>, not '\ufffd'
        return f"feature L{layer} #{feature} at {show_text(token)}: promotes {tokens}"
    if kind == ERROR:
        return f"MLP {layer} reconstruction error at {show_text(token)}"
    if kind == EMBEDDING:
        return f"token embedding {show_text(token)}"
    return f"logit {graph.logit_labels[int((graph.kind[:index] == kind).sum())]!r}"
