"""Attribution graphs: the direct linear effect of every node on every other.

Algorithm (phases below):
  0. Clean forward; freeze attention patterns and norm scales; find active features,
     error vectors and decoder rows (context.py).
  1. Choose the logit targets and compute their rows.
  2. Compute feature rows: all of them, or - under `max_feature_nodes` - the most
     influential ones, re-ranking by influence on the rows computed so far.
  3. Package a Graph. Features without a row stay in the graph as source-only nodes with
     all their outgoing effects, so a partial graph loses nothing: its rows equal the full
     graph's rows.

Memory: every batch of rows is dense only over its causal cone (backward.py) and goes straight
into an EdgeStore (graph/edge_store.py) as sparse rows; the graph's edges are CSR. No
(rows x sources) or (N x N) matrix is allocated.
"""

from __future__ import annotations

import logging
import time

import torch
from tqdm.auto import tqdm

from ..graph import Graph
from ..graph.edge_store import EdgeStore, check_edge_budget
from ..graph.graph import EMBEDDING, ERROR, FEATURE, LOGIT
from ..replacement_model import ReplacementModel
from .backward import attribute_rows
from .context import ZERO_POSITIONS, AttributionContext, build_context
from .estimate import check_attribution_budget
from .targets import Target, resolve_targets

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def _timed(name: str):
    class _T:
        def __enter__(self):
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            log.info("%s: %.3f s", name, time.perf_counter() - self.t)

    return _T()


def _feature_rows(ctx: AttributionContext, order: torch.Tensor, batch_size: int, store: EdgeStore, slots, bar) -> None:
    """Write the row of feature order[i] to slot slots[i] of `store`, in batches of similar (layer, position)."""
    f = ctx.features[order.to(ctx.features.device)].cpu()
    sort = torch.argsort(f[:, 0] * ctx.T + f[:, 1], stable=True)  # homogeneous batches are cheaper
    order, slots = order[sort], slots[sort]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size].to(ctx.features.device)
        cols, rows = attribute_rows(ctx, ctx.features[idx, 0], ctx.features[idx, 1], ctx.encoder_vectors[idx])
        store.add(slots[start : start + batch_size], cols, rows)
        bar.update(len(idx))


def _logit_rows(ctx: AttributionContext, targets: list[Target], batch_size: int, store: EdgeStore, first_slot: int):
    """Write the rows of the logit targets to slots first_slot, first_slot + 1, ... of `store`."""
    L, T = ctx.n_layers, ctx.T
    vectors = torch.stack([t.vector for t in targets]).to(ctx.clean.embeddings.dtype)
    for start in range(0, len(targets), batch_size):
        v = vectors[start : start + batch_size]
        layers = torch.full((len(v),), L, dtype=torch.long, device=v.device)
        positions = torch.full((len(v),), T - 1, dtype=torch.long, device=v.device)
        cols, rows = attribute_rows(ctx, layers, positions, v)
        store.add(torch.arange(first_slot + start, first_slot + start + len(v)), cols, rows)


def attribute(
    model: ReplacementModel,
    prompt: str | list[int] | torch.Tensor,
    *,
    targets=None,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    max_feature_nodes: int | None = None,
    batch_size: int = 256,
    update_interval: int = 4,
    edge_budget: float | None = None,
    edge_dir: str | None = None,
    progress: bool = True,
) -> Graph:
    """Attribution graph of `prompt` (text or token ids) on `model`.

    targets: None (most probable tokens up to `desired_logit_prob`, at most `max_n_logits`),
    or a list of token strings / ids, `LogitDiff(a, b)`, `Direction(label, vector, weight)`
    or `(label, vector)` tuples. max_feature_nodes: compute rows for at most this many
    features, chosen by influence; the others stay as source-only nodes.
    edge_budget: None (exact, the default: every non-zero edge is kept) or a fraction f in (0, 1):
    edges with |a| < f · Σ|row| are dropped as rows are computed; graph.metadata["edge_budget"]
    records the dropped mass. edge_dir: keep the edges in memory-mapped files in this folder
    instead of in memory (for graphs larger than RAM; nothing is left there afterwards).
    """
    check_attribution_budget(model, prompt, max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob, max_feature_nodes=max_feature_nodes, batch_size=batch_size, update_interval=update_interval, edge_budget=edge_budget, edge_dir=edge_dir)  # fmt: skip
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_feature_nodes is not None and max_feature_nodes < 0:
        raise ValueError("max_feature_nodes must be >= 0 (or None for all features)")
    edge_budget = check_edge_budget(edge_budget)
    t_start = time.perf_counter()

    # Phase 0: clean run, freeze, active features, errors, decoder rows.
    with _timed("phase 0: forward and context"):
        input_ids = model.tokenize(prompt)
        ctx = build_context(model.freeze(input_ids))
    T, A = ctx.T, ctx.n_features
    n_sources = ctx.n_sources

    # Phase 1: logit targets and their rows (slots n_rows .. n_rows + K - 1, after the features).
    n_rows = A if max_feature_nodes is None else min(max_feature_nodes, A)
    store = EdgeStore(n_sources, edge_budget=edge_budget, directory=edge_dir)
    with _timed("phase 1: logit rows"):
        logits = ctx.clean.logits[T - 1]
        tlist = resolve_targets(
            model, ctx.clean.logits_pre_softcap[T - 1], logits, targets, max_n_logits, desired_logit_prob
        )
        _logit_rows(ctx, tlist, batch_size, store, n_rows)
    K = len(tlist)

    # Phase 2: feature rows, all or the most influential under a budget. Feature i's row goes
    # to slot i (all features) or to slot (rank of its selection) (under a budget).
    n_nodes = n_sources + K
    logit_nodes = torch.arange(n_sources, n_nodes)
    weights = torch.zeros(n_nodes)
    weights[logit_nodes] = torch.tensor([t.probability for t in tlist])
    bar = tqdm(total=n_rows, desc="feature rows", unit="row", disable=not progress)
    with _timed("phase 2: feature rows"):
        if n_rows == A:
            _feature_rows(ctx, torch.arange(A), batch_size, store, torch.arange(A), bar)
            row_features = torch.arange(A)
            slot_order = torch.arange(n_rows + K)
        else:
            from ..graph.influence import node_influence

            row_features = torch.empty(0, dtype=torch.long)
            visited = torch.zeros(A, dtype=torch.bool)
            while len(row_features) < n_rows:
                # Rank unvisited features by their influence on the logits through the rows so far.
                done = len(row_features)
                node_of_row = torch.cat([row_features, logit_nodes])  # node of slots 0..done-1, then logits
                slots = torch.cat([torch.arange(done), torch.arange(n_rows, n_rows + K)])
                csr = store.to_csr(slots, in_memory=True)
                influence = node_influence(csr, node_of_row, n_nodes, weights)[:A]
                del csr
                influence[visited] = -1
                take = min(update_interval * batch_size, n_rows - done)
                chosen = torch.argsort(influence, descending=True, stable=True)[:take]
                visited[chosen] = True
                _feature_rows(ctx, chosen, batch_size, store, torch.arange(done, done + take), bar)
                row_features = torch.cat([row_features, chosen])
            order = torch.argsort(row_features)  # rows in node order
            row_features = row_features[order]
            slot_order = torch.cat([order, torch.arange(n_rows, n_rows + K)])
        budget_report = store.report()
        edges = store.finish(slot_order)
    bar.close()

    # Phase 3: package the graph.
    with _timed("phase 3: graph"):
        graph = _package(model, ctx, tlist, edges, row_features, logit_nodes, input_ids)
        if isinstance(prompt, str):
            graph.prompt = prompt
    graph.metadata["settings"] = {
        "max_n_logits": max_n_logits,
        "desired_logit_prob": desired_logit_prob,
        "max_feature_nodes": max_feature_nodes,
        "batch_size": batch_size,
        "edge_budget": edge_budget,
    }
    if edge_budget is not None:
        graph.metadata["edge_budget"] = budget_report
    graph.metadata["attribution_seconds"] = time.perf_counter() - t_start
    return graph


def _package(model, ctx: AttributionContext, tlist, edges, row_features, logit_nodes, input_ids) -> Graph:
    L, T, A = ctx.n_layers, ctx.T, ctx.n_features
    K = len(tlist)
    err_l, err_p = torch.meshgrid(torch.arange(L), torch.arange(ZERO_POSITIONS, T), indexing="ij")
    n_err = err_l.numel()
    f = ctx.features.cpu()
    kind = torch.cat([
        torch.full((A,), FEATURE), torch.full((n_err,), ERROR), torch.full((T,), EMBEDDING), torch.full((K,), LOGIT)
    ]).to(torch.int8)  # fmt: skip
    layer = torch.cat([f[:, 0], err_l.flatten(), torch.full((T,), -1), torch.full((K,), L)])
    position = torch.cat([f[:, 1], err_p.flatten(), torch.arange(T), torch.full((K,), T - 1)])
    feature = torch.cat([
        f[:, 2], torch.full((n_err,), -1), input_ids.cpu(), torch.tensor([t.token_id for t in tlist])
    ])  # fmt: skip
    activation = torch.cat([
        ctx.activations.float().cpu(), torch.zeros(n_err + T), torch.tensor([t.probability for t in tlist])
    ])  # fmt: skip
    tc = model.transcoders
    tokens = [model.tokenizer.decode([i]) for i in input_ids.tolist()]
    metadata = {
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "architecture": model.architecture.name,
        "transcoders": tc.name,
        "transcoder_kind": tc.kind,
        "input_hook": tc.input_hook,
        "output_hook": tc.output_hook,
        "vocab_size": model.vocab_size,
        "d_model": model.d_model,
        # |error| / |MLP output| of each error node, keyed "layer:position" (survives pruning and subsets):
        # how much of that MLP's output the transcoder leaves unexplained
        "error_share": _error_shares(ctx, err_l.flatten().tolist(), err_p.flatten().tolist()),
        "targets": [
            {"label": t.label, "token_id": t.token_id, "probability": t.probability, "custom": t.custom}
            | ({"vector": t.vector.float().cpu().tolist()} if t.custom else {})
            for t in tlist
        ],
    }
    return Graph(
        prompt=model.tokenizer.decode(input_ids.tolist()),
        input_ids=input_ids.cpu(),
        tokens=tokens,
        n_layers=L,
        kind=kind,
        layer=layer.long(),
        position=position.long(),
        feature=feature.long(),
        activation=activation.float(),
        edge_indptr=edges.indptr,
        edge_sources=edges.sources,
        edge_values=edges.values,
        row_nodes=torch.cat([row_features, logit_nodes]),
        logit_labels=[t.label for t in tlist],
        metadata=metadata,
    )


def _error_shares(ctx, layers: list[int], positions: list[int]) -> dict[str, float]:
    """{"l:p": ||error|| / ||MLP output||} at every error node (0 where the MLP output is 0)."""
    err = ctx.errors.double().norm(dim=-1).cpu()  # (L, T)
    out = ctx.clean.mlp_outputs.double().norm(dim=-1).cpu()  # (L, T)
    share = torch.where(out > 0, err / out.clamp_min(1e-300), torch.zeros_like(err))
    return {f"{l}:{p}": float(share[l, p]) for l, p in zip(layers, positions)}
