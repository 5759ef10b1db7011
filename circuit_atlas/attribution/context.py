"""Phase 0 of attribution: what one clean forward tells us about the prompt.

Active features, their encoder and (activation-scaled) decoder vectors, error vectors and
token embeddings, laid out as graph columns:

    [0, A)                     active features, sorted by (layer, position, feature)
    [A, A + L*(T-1))           errors (l, p) for p >= 1, index A + l*(T-1) + (p-1)
    [A + L*(T-1), ... + T)     embeddings, one per position (BOS included)

Position 0 (BOS) gets no feature or error nodes: its MLP outputs act as constants, like
every bias. Decoder vectors are packed per output layer and position so that reading all
feature edges out of a batch of cotangents is one batched matmul per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.forward import CleanRun
from ..models.frozen import FrozenModel

ZERO_POSITIONS = 1  # positions [0, ZERO_POSITIONS) carry no feature or error nodes (BOS)


@dataclass
class DecoderPack:
    """Decoder rows writing into one output layer, grouped by position (no padding)."""

    vectors: torch.Tensor  # (R, d) activation-scaled decoder rows, sorted by position
    columns: torch.Tensor  # (R,) graph column (feature node) of each row
    bounds: list[int]  # (T+1,) rows of position p are [bounds[p], bounds[p+1])


@dataclass
class AttributionContext:
    frozen: FrozenModel
    clean: CleanRun
    features: torch.Tensor  # (A, 3) long: layer, position, feature index
    activations: torch.Tensor  # (A,)
    encoder_vectors: torch.Tensor  # (A, d) W_enc rows of active features
    errors: torch.Tensor  # (L, T, d), zero at BOS
    decoders: list[DecoderPack]  # one per output layer

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


def _pack_decoders(rows_by_layer: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]], T: int, d: int, like):
    packs = []
    for parts in rows_by_layer:
        pos = torch.cat([p for p, _, _ in parts]) if parts else torch.zeros(0, dtype=torch.long, device=like.device)
        vec = torch.cat([v for _, v, _ in parts]) if parts else like.new_zeros(0, d)
        col = torch.cat([c for _, _, c in parts]) if parts else pos.clone()
        order = torch.argsort(pos, stable=True)
        counts = torch.bincount(pos, minlength=T)
        bounds = [0] + torch.cumsum(counts, 0).tolist()
        packs.append(DecoderPack(vec[order].contiguous(), col[order], bounds))
    return packs


@torch.no_grad()
def build_context(frozen: FrozenModel) -> AttributionContext:
    tc, clean = frozen.tc, frozen.clean
    L, T = frozen.n_layers, frozen.T
    d = clean.embeddings.shape[1]
    acts = []
    for l in range(L):
        a = tc.activate(l, tc.encode(l, clean.feature_inputs[l]))  # (T, F_l)
        a[:ZERO_POSITIONS] = 0
        acts.append(a)
    reconstruction = tc.reconstruct(acts, clean.feature_inputs)
    errors = clean.mlp_outputs - reconstruction
    errors[:, :ZERO_POSITIONS] = 0

    features, values, encoders = [], [], []
    rows_by_layer: list[list] = [[] for _ in range(L)]
    offset = 0
    for l in range(L):
        pos, feat = acts[l].nonzero(as_tuple=True)  # row-major: sorted by (position, feature)
        a = acts[l][pos, feat]
        features.append(torch.stack([torch.full_like(pos, l), pos, feat], dim=1))
        values.append(a)
        encoders.append(tc.W_enc[l][feat])
        columns = torch.arange(offset, offset + len(pos), device=pos.device)
        for j, target_layer in enumerate(tc.output_layers(l)):
            rows_by_layer[target_layer].append((pos, a[:, None] * tc.W_dec[l][feat, j], columns))
        offset += len(pos)
    return AttributionContext(
        frozen=frozen,
        clean=clean,
        features=torch.cat(features),
        activations=torch.cat(values),
        encoder_vectors=torch.cat(encoders),
        errors=errors,
        decoders=_pack_decoders(rows_by_layer, T, d, clean.embeddings),
    )
