"""What a feature writes and what excites it, read off the weights (no data needed).

Logit effect of one unit of feature f read at layer l, written to output layer l + j:
    e_j = W_U (g ⊙ W_dec[l][f, j])          (V,)   g: the final norm's gain (its scale left out: logit lens)
summed over j for a CLT (every write reaches the unembedding through the residual stream).
Embedding effect: how much each token's embedding alone drives the encoder,
    x_t = s · W_E[t],  e_in = W_enc[l][f] · x_t  (V,)  s: the embedding scale.
"""

from __future__ import annotations

import torch

FEATURE_CHUNK = 256  # features at a time: a (V, chunk) block, small even for a 256k vocabulary


def _top_bottom(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top ids, top values, bottom ids, bottom values), each (F, n), of scores (V, F)."""
    n = min(n, scores.shape[0])
    top = scores.topk(n, dim=0)
    bottom = (-scores).topk(n, dim=0)
    return top.indices.T, top.values.T, bottom.indices.T, -bottom.values.T


@torch.no_grad()
def layer_effects(weights, transcoders, layer: int, n_logits: int, n_per_layer: int, n_inputs: int) -> dict:
    """Effects of every feature of `layer` as tensors keyed by name (ids int32, values float32, (F, n) each)."""
    W_dec, W_enc = transcoders.W_dec[layer], transcoders.W_enc[layer]  # (F, n_out, d), (F, d)
    W_U = weights.W_U.float()
    gain = weights.final_norm.gain.float()
    embed = weights.embed.float() * weights.embed_scale
    clt = W_dec.shape[1] > 1
    parts: dict[str, list[torch.Tensor]] = {}

    def add(name, values):
        ids_t, val_t, ids_b, val_b = values
        for key, t in ((f"{name}.top_ids", ids_t), (f"{name}.top", val_t), (f"{name}.bottom_ids", ids_b),
                       (f"{name}.bottom", val_b)):  # fmt: skip
            parts.setdefault(key, []).append(t.to(torch.int32) if "ids" in key else t.float())

    for s in range(0, W_enc.shape[0], FEATURE_CHUNK):
        dec = W_dec[s : s + FEATURE_CHUNK].float()  # (f, n_out, d)
        add("logits", _top_bottom(W_U @ (dec.sum(1) * gain).T, n_logits))
        if clt and n_per_layer:
            for j in range(dec.shape[1]):
                add(f"logits_out{layer + j}", _top_bottom(W_U @ (dec[:, j] * gain).T, n_per_layer))
        if n_inputs:
            add("inputs", _top_bottom(embed @ W_enc[s : s + FEATURE_CHUNK].float().T, n_inputs))
    return {key: torch.cat(chunks).cpu() for key, chunks in parts.items()}
