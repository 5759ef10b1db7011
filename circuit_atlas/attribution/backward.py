"""The core of attribution: many target rows pushed back through the frozen model at once.

Each batch element is one target: a feature (inject its encoder vector at its layer's
input site and position) or a logit (inject its direction at the final-norm output, last
position). Walking down the layers with the transposed ops of FrozenModel, the cotangent
at each layer's MLP-output site is read against every source that writes there: decoder
rows of active features, error vectors, and at the bottom the token embeddings. The
result is the batch's rows of the edge matrix, exact because the frozen model is linear.

Cost is cut twice: a batch starts at its highest target layer, and it only carries the
positions up to its last target position (causality). Memory is cut the same way: a batch's
rows are dense only over its causal cone (features and errors below its top layer at positions
up to its last, embeddings up to its last position), never over every source of the graph;
the caller sparsifies them into the graph's edge store.
"""

from __future__ import annotations

import torch

from ..models.workspace import Workspace
from .context import ZERO_POSITIONS, AttributionContext


def cone_columns(ctx: AttributionContext, top: int, P: int) -> torch.Tensor:
    """(C,) int64, ascending: graph columns a batch topped at layer `top` over positions [0, P) can reach.

    Features and errors at layers < top and positions < P, and the embeddings of positions < P.
    (A feature at layer l writes at output layers >= l, so every decoder row read below `top`
    belongs to a feature in this set.)
    """
    f = ctx.features  # (A, 3)
    features = ((f[:, 0] < top) & (f[:, 1] < P)).nonzero().squeeze(1)
    device = f.device
    n_err_layers = min(top, ctx.n_layers)
    per_layer = ctx.T - ZERO_POSITIONS
    p = torch.arange(ZERO_POSITIONS, max(P, ZERO_POSITIONS), device=device)
    errors = ctx.n_features + torch.arange(n_err_layers, device=device)[:, None] * per_layer + p - ZERO_POSITIONS
    embeddings = ctx.embedding_offset + torch.arange(P, device=device)
    return torch.cat([features, errors.flatten(), embeddings])


GATHER_ROWS = 8192  # decoder rows gathered at once while reading one layer (x d_model x 4 bytes: 75 MB at d 2304)


def _read_sources(ctx: AttributionContext, l: int, g_out: torch.Tensor, out: torch.Tensor, local) -> None:
    """Add every source at layer l's output site to out (B, C), column c = graph column cols[c].

    g_out (B, P, d); local (n_sources,) maps a graph column to its cone column. Decoder rows
    are gathered from the weights a few thousand at a time (whole positions), never kept.
    """
    B, P, _ = g_out.shape
    index = ctx.decoders[l]
    bounds = index.bounds
    cached = ctx.cached_decoder_rows(l)  # all of layer l's rows when they fit ROW_CACHE_BYTES, else None
    p = 0
    while p < P and cached is not None:  # (B, d) @ (d, R_p): every feature at position p writing into layer l
        start, end = bounds[p], bounds[p + 1]
        if end > start:
            out.index_add_(1, local[index.columns[start:end]], g_out[:, p] @ cached[start:end].T)
        p += 1
    while p < P:
        q = p + 1  # positions [p, q): as many as fit GATHER_ROWS (at least one)
        while q < P and bounds[q + 1] - bounds[p] <= GATHER_ROWS:
            q += 1
        first, last = bounds[p], bounds[q]
        if last > first:
            columns = index.columns[first:last]
            rows = ctx.decoder_rows(l, columns)  # (R, d) activation-scaled decoder rows
            targets = local[columns]
            for i in range(p, q):
                start, end = bounds[i] - first, bounds[i + 1] - first
                if end > start:  # (B, d) @ (d, R_i): every feature at position i writing into layer l
                    out.index_add_(1, targets[start:end], g_out[:, i] @ rows[start:end].T)
        p = q
    if P > ZERO_POSITIONS:
        start = int(local[ctx.error_column(l, ZERO_POSITIONS)])  # errors of one layer are consecutive
        err = torch.einsum("bpd,pd->bp", g_out[:, ZERO_POSITIONS:], ctx.errors[l, ZERO_POSITIONS:P])
        out[:, start : start + P - ZERO_POSITIONS] = err


@torch.no_grad()
def attribute_rows(
    ctx: AttributionContext,
    layers: torch.Tensor,
    positions: torch.Tensor,
    vectors: torch.Tensor,
    work: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge rows for targets at (layers[i], positions[i]) with injection vectors[i], over their cone.

    Returns (cols, rows): cols (C,) int64 ascending graph columns (see `cone_columns`), rows (B, C)
    with rows[i, c] the direct effect of source cols[c] on target i. Sources outside the cone have
    no effect, by causality. layers[i] == n_layers marks a logit-style target read at the
    final-norm output. With a Workspace the temporaries reuse its buffers and `rows` lives in one
    of them: it is valid until the next call with the same workspace.
    """
    frozen = ctx.frozen
    work = Workspace() if work is None else work
    L = ctx.n_layers
    B = layers.shape[0]
    P = int(positions.max()) + 1
    top = int(layers.max())
    d = vectors.shape[1]
    dt, dev = vectors.dtype, vectors.device
    cols = cone_columns(ctx, top, P)  # (C,)
    local = torch.full((ctx.n_sources,), -1, dtype=torch.long, device=cols.device)
    local[cols] = torch.arange(cols.numel(), device=cols.device)
    out = work.get("rows", (B, cols.numel()), dt, dev).zero_()
    g = work.get("g", (B, P, d), dt, dev).zero_()  # cotangent at the residual stream above the current layer
    batch = torch.arange(B, device=dev)

    at_end = layers == L
    if at_end.any():
        g_z = torch.zeros_like(g)
        g_z[batch[at_end], positions[at_end]] = vectors[at_end]
        g.copy_(frozen.final_T(g_z))
        del g_z

    first = True
    for l in range(min(top, L - 1), -1, -1):
        if l < top:  # rows whose target sits above layer l carry cotangent here
            g_out = frozen.output_site_T(l, g)
            _read_sources(ctx, l, g_out, out, local)
            g_skip = frozen.skip_T(l, g_out)
            del g_out
            if g_skip is not None:
                g += frozen.input_site_T(l, g_skip)
        here = layers == l
        if here.any():  # targets at layer l inject their vectors at their input site
            rows, pos = batch[here], positions[here]
            g[rows, pos] += frozen.input_site_T_at(l, vectors[here], pos)
        # at the batch's first layer every row is non-zero only at its own position (its injection)
        frozen.attention_T_(l, g, at=positions if first else None, work=work)
        first = False

    off = int(local[ctx.embedding_offset])
    out[:, off : off + P] = torch.einsum("bpd,pd->bp", g, ctx.clean.embeddings[:P])
    return cols, out
