"""The attribution context holds O(A) per active feature, never a vector per feature; rows are gathered exactly."""

import dataclasses

import pytest
import torch
from tiny import PROMPT, tiny_llama_replacement

from circuit_atlas import attribute
from circuit_atlas.attribution import backward, context
from circuit_atlas.attribution.attribute import (
    assemble_graph,
    clean_run,
    compute_feature_rows_by_influence,
    compute_logit_rows,
    logit_targets,
    threads_for,
)
from circuit_atlas.attribution.context import build_context
from circuit_atlas.graph.edge_store import EdgeStore


@pytest.fixture(scope="module", params=["plt", "clt"])
def model(request):
    return tiny_llama_replacement(request.param)


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if dataclasses.is_dataclass(value):
        return sum(_nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


def test_the_context_keeps_no_vector_per_active_feature(model):
    ctx = build_context(model.freeze(model.tokenize(PROMPT)))
    A, d = ctx.n_features, model.d_model
    per_feature = {f.name: _nbytes(getattr(ctx, f.name)) for f in dataclasses.fields(ctx)}
    per_feature.pop("frozen"), per_feature.pop("clean"), per_feature.pop("errors")  # (L, T, d): not per feature
    n_out = sum(w.shape[1] for w in model.transcoders.W_dec) / model.n_layers
    # (layer, position, index) int64, the activation, and 8 bytes per decoder writer: O(A), not O(A x d)
    assert sum(per_feature.values()) <= A * (24 + 4 + 8 * n_out) + 8 * (model.n_layers * (ctx.T + 1))
    # materialised encoder and decoder rows would be A x d x 4 x (1 + n_out): several times more even at d 32
    assert A * d * 4 * (1 + n_out) > 4 * sum(per_feature.values())


def test_gathered_rows_are_the_transcoder_weights_exactly(model):
    ctx = build_context(model.freeze(model.tokenize(PROMPT)))
    tc = model.transcoders
    columns = torch.arange(ctx.n_features)
    enc = ctx.encoder_rows(columns)
    for i, (l, _, f) in enumerate(ctx.features.tolist()):
        assert torch.equal(enc[i], tc.W_enc[l][f])
    for target, index in enumerate(ctx.decoders):
        rows = ctx.decoder_rows(target, index.columns)
        for r, c in enumerate(index.columns.tolist()):
            l, p, f = ctx.features[c].tolist()
            assert target in tc.output_layers(l) and index.bounds[p] <= r < index.bounds[p + 1]
            assert torch.equal(rows[r], ctx.activations[c] * tc.W_dec[l][f, target - l])
        writers = sorted(i for i, (l, _, _) in enumerate(ctx.features.tolist()) if target in tc.output_layers(l))
        assert sorted(index.columns.tolist()) == writers  # every feature writing there, once


def test_errors_are_the_mlp_outputs_minus_the_reconstruction_exactly(model):
    frozen = model.freeze(model.tokenize(PROMPT))
    ctx = build_context(frozen)
    tc, clean = model.transcoders, frozen.clean
    acts = []
    for l in range(model.n_layers):
        a = tc.activate(l, tc.encode(l, clean.feature_inputs[l]))
        a[:1] = 0
        acts.append(a)
    expected = clean.mlp_outputs - tc.reconstruct(acts, clean.feature_inputs)
    expected[:, :1] = 0
    assert torch.equal(ctx.errors, expected)


def test_the_graph_does_not_depend_on_how_many_decoder_rows_are_gathered_at_once(model, monkeypatch):
    reference = attribute(model, PROMPT, max_n_logits=3, progress=False)  # small: rows cached once
    monkeypatch.setattr(context, "ROW_CACHE_BYTES", 0)  # from here on gathered per batch
    for rows in (1, 5, backward.GATHER_ROWS):  # one position a gather (or fewer rows than it holds), a few, all
        monkeypatch.setattr(backward, "GATHER_ROWS", rows)
        g = attribute(model, PROMPT, max_n_logits=3, progress=False)
        assert torch.equal(g.edge_indptr, reference.edge_indptr)
        assert torch.equal(g.edge_sources, reference.edge_sources)
        assert torch.equal(g.edge_values, reference.edge_values)


@pytest.mark.parametrize("max_feature_nodes", [None, 20])
def test_the_named_phases_compose_into_attribute(model, max_feature_nodes):
    """attribute() is its phases in order: running them by hand gives the same graph."""
    graph = attribute(model, PROMPT, max_n_logits=3, max_feature_nodes=max_feature_nodes, progress=False)
    ids = model.tokenize(PROMPT)
    with threads_for(model, ids, 256):  # as attribute() runs them (a small graph: one intra-op thread)
        frozen = clean_run(model, ids)
        targets = logit_targets(model, frozen, None, 3, 0.95)
        ctx = build_context(frozen)
        n_rows = ctx.n_features if max_feature_nodes is None else min(max_feature_nodes, ctx.n_features)
        store = EdgeStore(ctx.n_sources)
        compute_logit_rows(ctx, targets, 256, store, first_slot=n_rows)
        row_features, slot_order = compute_feature_rows_by_influence(ctx, targets, n_rows, 256, 4, store, False)
        by_hand = assemble_graph(model, ctx, targets, store.finish(slot_order), row_features, ids)
    assert torch.equal(by_hand.row_nodes, graph.row_nodes)
    for a, b in zip(by_hand.edge_list(), graph.edge_list()):
        assert torch.equal(a, b)
    assert by_hand.logit_labels == graph.logit_labels
