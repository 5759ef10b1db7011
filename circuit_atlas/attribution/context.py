"""Phase 0 of attribution: what one clean forward tells us about the prompt.

Active features, error vectors and token embeddings, laid out as graph columns:

    [0, A)                     active features, sorted by (layer, position, feature)
    [A, A + L*(T-1))           errors (l, p) for p >= 1, index A + l*(T-1) + (p-1)
    [A + L*(T-1), ... + T)     embeddings, one per position (BOS included)

Position 0 (BOS) gets no feature or error nodes: its MLP outputs act as constants, like
every bias.

Memory is O(weights + A), not O(A x d): no encoder or decoder row is copied per active
feature. A feature's encoder row (its injection vector) and its activation-scaled decoder
rows are gathered from the transcoder weights when a batch needs them (`encoder_rows`,
`decoder_rows`). What the context keeps per feature is its (layer, position, index), its
activation, and - per output layer it writes into - its column in a position-sorted index
(`DecoderIndex`), so that a batch reads every feature at one position with one matmul.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.forward import CleanRun
from ..models.frozen import FrozenModel
from ..models.workspace import Workspace

ZERO_POSITIONS = 1  # positions [0, ZERO_POSITIONS) carry no feature or error nodes (BOS)
# Gathering rows per batch costs ~20 % of the time on the 8-layer bench (27 MB of rows in all), so when
# every activation-scaled decoder row fits in this many bytes they are gathered once and kept; long
# prompts (Gemma-2-2B at 4,000 tokens: 115+ GB of rows) stay on the per-batch path.
ROW_CACHE_BYTES = 256 * 2**20


@dataclass
class DecoderIndex:
    """The features writing into one output layer, grouped by position (no padding, no vectors)."""

    columns: torch.Tensor  # (R,) int64 graph column (feature node) of each writer, sorted by position
    bounds: list[int]  # (T+1,) writers at position p are columns[bounds[p]:bounds[p+1]]


@dataclass
class AttributionContext:
    frozen: FrozenModel
    clean: CleanRun
    features: torch.Tensor  # (A, 3) int64: layer, position, feature index (on the model's device)
    activations: torch.Tensor  # (A,)
    errors: torch.Tensor  # (L, T, d), zero at BOS
    decoders: list[DecoderIndex]  # one per output layer

    @property
    def workspace(self) -> Workspace:
        """The buffers every batch of this attribution reuses (models/workspace.py); not a field."""
        return self.__dict__.setdefault("_workspace", Workspace())

    @property
    def device(self) -> torch.device:
        return self.features.device

    @property
    def n_features(self) -> int:
        return self.features.shape[0]

    @property
    def T(self) -> int:
        return self.clean.input_ids.shape[0]

    @property
    def n_layers(self) -> int:
        return self.errors.shape[0]

    def error_column(self, layer: int, position: int) -> int:
        return self.n_features + layer * (self.T - ZERO_POSITIONS) + position - ZERO_POSITIONS

    @property
    def embedding_offset(self) -> int:
        return self.n_features + self.n_layers * (self.T - ZERO_POSITIONS)

    @property
    def n_sources(self) -> int:
        return self.embedding_offset + self.T

    def encoder_rows(self, columns: torch.Tensor) -> torch.Tensor:
        """(B, d): the W_enc row of each feature column (B,), gathered from the transcoder weights."""
        tc = self.frozen.tc
        f = self.features[columns.to(self.device)]  # (B, 3)
        out = tc.W_enc[0].new_empty(len(f), tc.d_model)
        for l in _layers_present(f[:, 0]):  # one gather per source layer in the batch
            mine = (f[:, 0] == l).nonzero().squeeze(1)
            out[mine] = tc.W_enc[l][f[mine, 2]]
        return out

    def cached_decoder_rows(self, layer: int) -> torch.Tensor | None:
        """(R, d): decoder_rows of every writer into `layer`, in DecoderIndex order, gathered once - or
        None when all layers' rows together exceed ROW_CACHE_BYTES (then callers gather per batch)."""
        cache = self.__dict__.setdefault("_row_cache", {})  # not a field: the context itself stays O(A)
        if layer not in cache:
            tc = self.frozen.tc
            total = sum(len(ix.columns) for ix in self.decoders) * tc.d_model * tc.W_dec[0].element_size()
            cache[layer] = self.decoder_rows(layer, self.decoders[layer].columns) if total <= ROW_CACHE_BYTES else None
        return cache[layer]

    def decoder_rows(self, layer: int, columns: torch.Tensor) -> torch.Tensor:
        """(R, d): a · W_dec row into output layer `layer` of each feature column (R,) writing there.

        Computed exactly as a materialised copy would be (activation times the decoder row), so
        the edges do not depend on whether rows are cached.
        """
        tc = self.frozen.tc
        f = self.features[columns]  # (R, 3)
        a = self.activations[columns, None]  # (R, 1)
        src = f[:, 0]
        layers = _layers_present(src)
        if len(layers) == 1:  # a PLT writes into a layer from that layer alone: one gather
            l = layers[0]
            return a * tc.W_dec[l][f[:, 2], layer - l]
        out = tc.W_dec[0].new_empty(len(f), tc.d_model)
        for l in layers:  # a CLT: one gather per source layer
            mine = (src == l).nonzero().squeeze(1)
            out[mine] = a[mine] * tc.W_dec[l][f[mine, 2], layer - l]
        return out


def _layers_present(layers: torch.Tensor) -> list[int]:
    """The distinct values of a small-range int tensor, ascending (cheaper than torch.unique on CPU)."""
    if layers.numel() == 0:
        return []
    lo = int(layers.min())
    return (torch.bincount(layers - lo).nonzero().squeeze(1) + lo).tolist()


def _index_decoders(writers: list[list[tuple[torch.Tensor, torch.Tensor]]], T: int, device) -> list[DecoderIndex]:
    """writers[l]: (positions, columns) pairs of the features writing into output layer l."""
    out = []
    for parts in writers:
        pos = torch.cat([p for p, _ in parts]) if parts else torch.zeros(0, dtype=torch.long, device=device)
        col = torch.cat([c for _, c in parts]) if parts else pos.clone()
        order = torch.argsort(pos, stable=True)
        counts = torch.bincount(pos, minlength=T)
        bounds = [0] + torch.cumsum(counts, 0).tolist()
        out.append(DecoderIndex(col[order], bounds))
    return out


@torch.no_grad()
def build_context(frozen: FrozenModel) -> AttributionContext:
    tc, clean = frozen.tc, frozen.clean
    L, T = frozen.n_layers, frozen.T
    device = clean.feature_inputs.device
    # the MLP outputs rebuilt from the transcoders (as Transcoders.reconstruct, same order of sums),
    # with one layer's (T, F_l) activations alive at a time instead of all L
    reconstruction = torch.stack([tc.b_dec[l].expand_as(clean.feature_inputs[l]).clone() for l in range(L)])
    features, values = [], []
    writers: list[list] = [[] for _ in range(L)]
    offset = 0
    for l in range(L):
        a = tc.activate(l, tc.encode(l, clean.feature_inputs[l]))  # (T, F_l)
        a[:ZERO_POSITIONS] = 0
        for j, target in enumerate(tc.output_layers(l)):
            reconstruction[target] += a @ tc.W_dec[l][:, j]
        skip = tc.skip(l, clean.feature_inputs[l])
        if skip is not None:
            reconstruction[l] += skip
        pos, feat = a.nonzero(as_tuple=True)  # row-major: sorted by (position, feature)
        features.append(torch.stack([torch.full_like(pos, l), pos, feat], dim=1))
        values.append(a[pos, feat])
        columns = torch.arange(offset, offset + len(pos), device=device)
        for target in tc.output_layers(l):
            writers[target].append((pos, columns))
        offset += len(pos)
        del a
    errors = clean.mlp_outputs - reconstruction
    errors[:, :ZERO_POSITIONS] = 0
    return AttributionContext(
        frozen=frozen,
        clean=clean,
        features=torch.cat(features),
        activations=torch.cat(values),
        errors=errors,
        decoders=_index_decoders(writers, T, device),
    )
