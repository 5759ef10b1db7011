"""Where in the model does a token appear? The residual stream and the features read through the unembedding.

For a prompt, after each layer and at chosen positions: the rank of a token when the residual
stream is passed through the final norm and the unembedding (the "logit lens"), and the active
transcoder feature whose decoder pushes that token hardest, a * (u_t - mean_j u_j) . (g * W_dec)
(see describe.py). This is how the README reports where " Texas" and " Austin" appear.
"""

from __future__ import annotations

import torch

from ..models.forward import apply_norm, norm_scale
from ..models.linear import linear
from .describe import decoder_logits, promoted_tokens


def token_id(model, token: str) -> int:
    ids = model.tokenizer(token, add_special_tokens=False)["input_ids"]
    return int(ids[0])  # a multi-token word is represented by its first token


def _rank(logits: torch.Tensor, token: int) -> int:
    return int((logits > logits[token]).sum()) + 1


@torch.no_grad()
def where_tokens_appear(model, prompt: str, tokens: list[str], positions: dict[str, int]) -> list[dict]:
    """Per layer (after its MLP) and position: lens rank of each token, and its strongest feature."""
    w, tc = model.weights, model.transcoders
    if (tc.input_hook, tc.output_hook) != ("hook_resid_mid", "hook_mlp_out"):
        raise ValueError(
            "where_tokens_appear rebuilds the residual stream from the transcoder sites, so it needs "
            f"transcoders read at hook_resid_mid and written at hook_mlp_out (these use {tc.input_hook} -> {tc.output_hook})"
        )
    ids = model.tokenize(prompt)
    run = model.run(ids)
    acts = model.activations(ids)
    tids = [token_id(model, t) for t in tokens]
    rows = []
    for l in range(model.n_layers):
        resid = run.feature_inputs[l] + run.mlp_outputs[l]  # residual stream after layer l
        lens = linear(apply_norm(w.final_norm, resid, norm_scale(w.final_norm, resid)), w.W_U, w.b_U)  # W_U may be bf16
        row = {"layer": l}
        for group, p in positions.items():
            for t, tid in zip(tokens, tids):
                row[f"rank {t.strip()} @ {group}"] = _rank(lens[p], tid)
        for t, tid in zip(tokens, tids):
            best, best_push = None, 0.0
            for f, a in acts.active(l):
                if f.position in positions.values():
                    logits = decoder_logits(model, l, f.index)
                    push = a * float(logits[tid] - logits.mean())
                    if push > best_push:
                        best, best_push = f, push
            if best is None:
                row[f"top {t.strip()} feature"] = "-"
            else:
                where = [g for g, p in positions.items() if p == best.position][0]
                top = ", ".join(s.strip() for s in promoted_tokens(model, l, best.index, 3))
                row[f"top {t.strip()} feature"] = f"#{best.index} @ {where} (+{best_push:.1f}; {top})"
        rows.append(row)
    return rows
