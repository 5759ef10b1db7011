"""Attribution graphs: the direct linear effect of every node on every other.

`attribute()` is a short driver over named phases, each a function below:

    clean_run           forward the prompt; freeze attention patterns and norm scales
    logit_targets       what the graph explains: the logit directions at the last position
    build_context       active features, errors, the position index of decoder writers (context.py)
    compute_logit_rows  the targets' rows
    compute_feature_rows_by_influence
                        feature rows: all of them, or - under `max_feature_nodes` - the most
                        influential ones, re-ranked by influence on the rows computed so far
    assemble_graph      package a Graph. Features without a row stay in the graph as source-only
                        nodes with all their outgoing effects, so a partial graph loses nothing:
                        its rows equal the full graph's rows.

Memory: the context holds no per-feature vectors (context.py); every batch of rows is dense only
over its causal cone (backward.py) and goes straight into an EdgeStore (graph/edge_store.py) as
sparse rows, thinned by `edge_budget` as it arrives; the graph's edges are CSR. No (rows x sources)
or (N x N) matrix is allocated.

Devices: the clean run, the context and every batch live on the model's device; the edge store, the
influence ranking and the graph live on the CPU. Index tensors cross over explicitly (`.to(ctx.device)`
going in, `.cpu()` coming out).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from ..graph import Graph
from ..graph.edge_store import EdgeStore, check_edge_budget
from ..graph.graph import EMBEDDING, ERROR, FEATURE, LOGIT
from ..models.frozen import FrozenModel
from ..replacement_model import ReplacementModel
from .backward import attribute_rows
from .budget import check_attribution_budget
from .context import ZERO_POSITIONS, AttributionContext, build_context
from .heap import release_freed_memory
from .targets import Target, resolve_targets

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@contextmanager
def _timed(name: str):
    start = time.perf_counter()
    yield
    log.info("%s: %.3f s", name, time.perf_counter() - start)


# Below this many elements in a batch's (rows, tokens, d_model) cotangent, every product is so small that
# splitting it over intra-op threads costs more than it saves (the 4-layer bench case: 0.066 s with 2
# threads, 0.039 s with 1), so small attributions run on one thread.
SMALL_BATCH_ELEMENTS = 1 << 20


@contextmanager
def threads_for(model: ReplacementModel, input_ids: torch.Tensor, batch_size: int):
    """One intra-op thread while a small attribution runs (see SMALL_BATCH_ELEMENTS), else as set."""
    threads = torch.get_num_threads()
    elements = batch_size * len(input_ids) * model.weights.d_model
    if model.device.type != "cpu" or threads == 1 or elements >= SMALL_BATCH_ELEMENTS:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _small_on_one_thread(fn):
    batch_default = inspect.signature(fn).parameters["batch_size"].default

    @functools.wraps(fn)
    def run(model, prompt, **kwargs):
        with threads_for(model, model.tokenize(prompt), kwargs.get("batch_size", batch_default)):
            return fn(model, prompt, **kwargs)

    return run


@_small_on_one_thread
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
    edges with |a| < f · Σ|row| are dropped as rows are computed (so a row keeps at most 1/f edges);
    graph.metadata["edge_budget"] records the dropped mass. edge_dir: keep the edges in memory-mapped
    files in this folder instead of in memory (for graphs larger than RAM; nothing is left there afterwards).
    """
    check_attribution_budget(model, prompt, max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob, max_feature_nodes=max_feature_nodes, batch_size=batch_size, update_interval=update_interval, edge_budget=edge_budget, edge_dir=edge_dir)  # fmt: skip
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_feature_nodes is not None and max_feature_nodes < 0:
        raise ValueError("max_feature_nodes must be >= 0 (or None for all features)")
    edge_budget = check_edge_budget(edge_budget)
    t_start = time.perf_counter()

    input_ids = model.tokenize(prompt)
    with _timed("clean run"):
        frozen = clean_run(model, input_ids)
    with _timed("targets"):
        tlist = logit_targets(model, frozen, targets, max_n_logits, desired_logit_prob)
    with _timed("context"):
        ctx = build_context(frozen)
    A = ctx.n_features
    n_rows = A if max_feature_nodes is None else min(max_feature_nodes, A)
    # Slots of the store: feature rows 0 .. n_rows - 1 (in the order they are computed), then the K logits.
    store = EdgeStore(ctx.n_sources, edge_budget=edge_budget, directory=edge_dir)
    try:
        row_features, slot_order = _rows(ctx, tlist, n_rows, batch_size, update_interval, store, progress)
        budget_report = store.report()
        edges = store.finish(slot_order)
    finally:
        store.close()
    with _timed("assemble graph"):
        graph = assemble_graph(model, ctx, tlist, edges, row_features, input_ids)
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


def _rows(ctx, tlist, n_rows, batch_size, update_interval, store, progress):
    """Phases 2 and 3: the logit rows, then the feature rows."""
    with _timed("logit rows"):
        compute_logit_rows(ctx, tlist, batch_size, store, first_slot=n_rows)
    with _timed("feature rows"):
        return compute_feature_rows_by_influence(ctx, tlist, n_rows, batch_size, update_interval, store, progress)


def clean_run(model: ReplacementModel, input_ids: torch.Tensor) -> FrozenModel:
    """Forward the prompt (T,) once and freeze it: attention patterns and norm scales held at their
    clean values, MLPs replaced by their outputs plus the transcoders' skip (models/frozen.py)."""
    return model.freeze(input_ids)


def logit_targets(model: ReplacementModel, frozen: FrozenModel, targets, max_n_logits: int,
                  desired_logit_prob: float) -> list[Target]:  # fmt: skip
    """The directions the graph explains, read from the clean logits at the last position (targets.py)."""
    T = frozen.T
    clean = frozen.clean
    return resolve_targets(
        model, clean.logits_pre_softcap[T - 1], clean.logits[T - 1], targets, max_n_logits, desired_logit_prob
    )


def compute_logit_rows(ctx: AttributionContext, targets: list[Target], batch_size: int, store: EdgeStore,
                       first_slot: int) -> None:  # fmt: skip
    """Write the rows of the logit targets to slots first_slot, first_slot + 1, ... of `store`.

    A logit row is injected at the final-norm output of the last position (layer index L).
    """
    L, T = ctx.n_layers, ctx.T
    dtype = ctx.clean.embeddings.dtype
    vectors = torch.stack([t.vector for t in targets]).to(device=ctx.device, dtype=dtype)  # (K, d)
    for start in range(0, len(targets), batch_size):
        v = vectors[start : start + batch_size]
        layers = torch.full((len(v),), L, dtype=torch.long, device=ctx.device)
        positions = torch.full((len(v),), T - 1, dtype=torch.long, device=ctx.device)
        cols, rows = attribute_rows(ctx, layers, positions, v, ctx.workspace)
        store.add(torch.arange(first_slot + start, first_slot + start + len(v)), cols, rows)
        del cols, rows
        release_freed_memory()


def compute_feature_rows(ctx: AttributionContext, order: torch.Tensor, batch_size: int, store: EdgeStore,
                         slots: torch.Tensor, bar) -> None:  # fmt: skip
    """Write the row of feature order[i] (CPU int64) to slot slots[i] of `store`, in batches.

    A feature row is injected at its layer's transcoder input site, at its position, along its
    encoder row. Batches are cut from the rows sorted by (layer, position): rows of one batch then
    share most of their cone and walk down from nearly the same layer, which is cheaper. They run
    widest cone (last position) first, so the workspace's buffers are sized once by the first batch.
    """
    order, slots = order.cpu(), slots.cpu()
    f = ctx.features[order.to(ctx.device)].cpu()  # (n, 3)
    sort = torch.argsort(f[:, 0] * ctx.T + f[:, 1], stable=True)
    order, slots = order[sort], slots[sort]
    positions = f[sort, 1]
    starts = list(range(0, len(order), batch_size))
    starts.sort(key=lambda s: -int(positions[min(s + batch_size, len(order)) - 1]))  # widest cone first
    for start in starts:
        idx = order[start : start + batch_size].to(ctx.device)
        cols, rows = attribute_rows(
            ctx, ctx.features[idx, 0], ctx.features[idx, 1], ctx.encoder_rows(idx), ctx.workspace
        )
        store.add(slots[start : start + batch_size], cols, rows)
        del cols, rows
        release_freed_memory()  # the batch's temporaries leave holes in the heap (heap.py)
        bar.update(len(idx))


def compute_feature_rows_by_influence(ctx: AttributionContext, targets: list[Target], n_rows: int,
                                      batch_size: int, update_interval: int, store: EdgeStore,
                                      progress: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Compute `n_rows` feature rows: all features (n_rows == A), or the most influential ones.

    Under a row budget the unvisited features are ranked by their influence on the logits through
    the rows computed so far (graph/influence.py on the partial graph), and the next
    update_interval x batch_size are computed; repeat. Returns (row_features (n_rows,) CPU int64:
    the feature of each row, in node order; slot_order: the store slots in graph row order, features
    then logits).
    """
    from ..graph.influence import node_influence

    A, K = ctx.n_features, len(targets)
    bar = tqdm(total=n_rows, desc="feature rows", unit="row", disable=not progress)
    try:
        if n_rows == A:  # every feature: feature i's row goes to slot i
            compute_feature_rows(ctx, torch.arange(A), batch_size, store, torch.arange(A), bar)
            return torch.arange(A), torch.arange(A + K)
        n_nodes = ctx.n_sources + K
        logit_nodes = torch.arange(ctx.n_sources, n_nodes)
        weights = torch.zeros(n_nodes)
        weights[logit_nodes] = torch.tensor([t.probability for t in targets])
        node_layer = _node_layers(ctx, K)  # (n_nodes,) CPU: rows are processed in layer order
        row_features = torch.empty(0, dtype=torch.long)
        visited = torch.zeros(A, dtype=torch.bool)
        while len(row_features) < n_rows:
            done = len(row_features)
            node_of_row = torch.cat([row_features, logit_nodes])  # node of slots 0..done-1, then logits
            slots = torch.cat([torch.arange(done), torch.arange(n_rows, n_rows + K)])
            csr = store.to_csr(slots, in_memory=True)
            influence = node_influence(csr, node_of_row, n_nodes, weights, node_layer=node_layer)[:A]
            del csr
            release_freed_memory(threshold=0)  # the ranking's copy of the edges leaves a hole its own size
            influence[visited] = -1
            take = min(update_interval * batch_size, n_rows - done)
            chosen = torch.argsort(influence, descending=True, stable=True)[:take]
            visited[chosen] = True
            compute_feature_rows(ctx, chosen, batch_size, store, torch.arange(done, done + take), bar)
            row_features = torch.cat([row_features, chosen])
        order = torch.argsort(row_features)  # rows in node order
        return row_features[order], torch.cat([order, torch.arange(n_rows, n_rows + K)])
    finally:
        bar.close()


def _node_layers(ctx: AttributionContext, K: int) -> torch.Tensor:
    """(n_sources + K,) int64 CPU: the layer of every node (embeddings -1, logits L), as the Graph's."""
    L, T = ctx.n_layers, ctx.T
    errors = torch.arange(L).repeat_interleave(T - ZERO_POSITIONS)
    return torch.cat([ctx.features[:, 0].cpu(), errors, torch.full((T,), -1), torch.full((K,), L)])


def assemble_graph(model, ctx: AttributionContext, tlist: list[Target], edges, row_features: torch.Tensor,
                   input_ids: torch.Tensor) -> Graph:  # fmt: skip
    """Package the nodes (features, errors, embeddings, logits: graph/graph.py's order) and the CSR
    edges (rows: row_features, then the logits) into a Graph, all on the CPU."""
    L, T, A = ctx.n_layers, ctx.T, ctx.n_features
    K = len(tlist)
    logit_nodes = torch.arange(ctx.n_sources, ctx.n_sources + K)
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
