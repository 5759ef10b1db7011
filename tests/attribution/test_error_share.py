"""Each error node records its share of the MLP output (||error|| / ||MLP output||), checked against
Hugging Face's own MLP inputs and outputs read with forward hooks (models/hooks.py harvest), not the
engine's forward."""

from __future__ import annotations

import torch

import circuit_atlas as ca
from circuit_atlas.models.hooks import harvest

PROMPT = "The capital of the state containing Dallas is"


def test_error_share_is_the_norm_ratio_of_the_hf_mlp_output():
    model = ca.ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    graph = ca.attribute(model, PROMPT, progress=False)
    tc = model.transcoders
    x, y = harvest(model.hf_model, graph.input_ids[None], tc.input_hook, tc.output_hook)  # (L, 1, T, d)
    x, y = x[:, 0].double(), y[:, 0].double()
    recon = tc.reconstruct(
        [tc.activate(l, tc.encode(l, x[l].to(tc.dtype))) for l in range(tc.n_layers)], x.to(tc.dtype)
    )
    err = (y - recon.double()).norm(dim=-1) / y.norm(dim=-1)
    shares = graph.metadata["error_share"]
    errors = graph.nodes[graph.nodes.kind == "error"]
    assert len(shares) == len(errors) > 0
    for row in errors.itertuples():
        assert abs(shares[f"{row.layer}:{row.position}"] - float(err[row.layer, row.position])) < 1e-4
    # pruning keeps the record, keyed by (layer, position)
    assert graph.prune().metadata["error_share"] == shares
    assert torch.isfinite(torch.tensor(list(shares.values()))).all()
