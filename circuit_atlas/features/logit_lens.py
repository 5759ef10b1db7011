"""Where in the model does a token's evidence appear? Active features read through the unembedding.

For a prompt, each active feature (layer l, position p, activation a) writes a·W_dec into the
residual stream; its direct push on token t is a · (u_t − mean_j u_j)·(g ⊙ Σ_j W_dec[f, j])
(see describe.py). Summing that over the features of one layer at a group of positions shows
layer by layer where the model represents, say, " Texas" and " Austin".
"""

from __future__ import annotations

import torch


def token_id(model, token: str) -> int:
    ids = model.tokenizer(token, add_special_tokens=False)["input_ids"]
    return int(ids[0])  # a multi-token word is represented by its first token


@torch.no_grad()
def layer_token_push(model, prompt: str, tokens: list[str], positions: dict[str, list[int]]) -> list[dict]:
    """Rows per layer: {'layer': l, '<token>@<group>': summed direct push, ...}."""
    from ..attribution.context import build_context

    ids = model.tokenize(prompt)
    ctx = build_context(model.freeze(ids))
    w, tc = model.weights, model.transcoders
    U = w.W_U - w.W_U.mean(0)  # demeaned unembedding
    targets = torch.stack([U[token_id(model, t)] for t in tokens]) * w.final_norm.gain  # (K, d)
    rows = []
    for l in range(model.n_layers):
        row = {"layer": l}
        mask = ctx.features[:, 0] == l
        feats, acts = ctx.features[mask], ctx.activations[mask]
        write = tc.W_dec[l][feats[:, 2]].sum(1) * acts[:, None]  # (n, d) total write of each feature
        push = write @ targets.T  # (n, K)
        for group, pos in positions.items():
            at = torch.isin(feats[:, 1], torch.tensor(pos))
            for k, t in enumerate(tokens):
                row[f"{t.strip()}@{group}"] = float(push[at, k].sum())
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) if k == "layer" else f"{r[k]:+.2f}" for k in keys) + " |")
    return "\n".join(lines)
