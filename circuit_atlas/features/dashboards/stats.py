"""Running, mergeable per-feature statistics with memory that does not grow with the corpus.

Per layer of F features:
    count   (F,)            non-zero activations seen
    total   (F,)            their sum (float64)
    hist    (F, NB)         counts in fixed log-spaced bins (EDGES), the same for every feature and build,
                            so histograms of two shards add exactly
    top     Selection       the top_k windows by the feature's max activation in the window
    sample  Selection       a uniform sample of the feature's non-zero activations: those with the
                            largest hash of (window, position, layer, feature), so which ones are kept
                            does not depend on the order or sharding of the corpus

A Selection keeps, per feature, the K best (score, order) pairs: higher score first, then lower
order (= window * seq_len + position, the stream position), and a context of C tokens around the
chosen token with that feature's activations over it. Merging two Selections is selecting again
from their union, so a merged distributed build equals the single-process one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Histogram bins: [0, 1e-6), then 16 per decade up to 1e6, then [1e6, inf).
DECADES = (-6, 6)
PER_DECADE = 16
EDGES = torch.logspace(DECADES[0], DECADES[1], (DECADES[1] - DECADES[0]) * PER_DECADE + 1, dtype=torch.float64)
N_BINS = len(EDGES) + 1
MASK31 = (1 << 31) - 1


def bin_index(values: torch.Tensor) -> torch.Tensor:
    """Histogram bin of each activation: i such that EDGES[i-1] <= v < EDGES[i] (0 below EDGES[0])."""
    return torch.bucketize(values.double(), EDGES.to(values.device), right=True)


def _mix(x: torch.Tensor) -> torch.Tensor:
    # A 31-bit integer hash; every product stays below 2**62, so int64 never overflows.
    x = (x & MASK31) * 0x2C1B3C6D & MASK31
    x = x ^ (x >> 13)
    x = (x * 0x297A2D39) & MASK31
    return x ^ (x >> 15)


def sample_key(order: torch.Tensor, feature_id: torch.Tensor) -> torch.Tensor:
    """Deterministic pseudo-random key in [0, 2**31) of an activation (order, global feature id)."""
    return _mix(_mix(order) ^ _mix(order >> 31) ^ _mix(feature_id * 7919 + 1))


@dataclass
class Selection:
    """Per feature, the K best entries by (score desc, order asc); empty slots have score -inf."""

    score: torch.Tensor  # (F, K) float64
    order: torch.Tensor  # (F, K) int64
    tokens: torch.Tensor  # (F, K, C) int32, -1 outside the window
    acts: torch.Tensor  # (F, K, C) float32

    @classmethod
    def empty(cls, F: int, K: int, C: int, device="cpu") -> Selection:
        return cls(
            torch.full((F, K), -torch.inf, dtype=torch.float64, device=device),
            torch.full((F, K), -1, dtype=torch.int64, device=device),
            torch.full((F, K, C), -1, dtype=torch.int32, device=device),
            torch.zeros(F, K, C, dtype=torch.float32, device=device),
        )

    @property
    def K(self) -> int:
        return self.score.shape[1]

    def update(self, feat: torch.Tensor, score: torch.Tensor, order: torch.Tensor, context) -> None:
        """Offer N candidates (feat, score, order), each (N,); context(idx) gives (tokens, acts), each
        (n, C), of the candidates idx that are kept (contexts are gathered only for those)."""
        F, K = self.score.shape
        # Candidates that cannot enter (below the K-th score of their feature) are dropped before sorting.
        keep = score >= self.score[feat, K - 1]
        feat, score, order = feat[keep], score[keep], order[keep]
        cand = keep.nonzero().squeeze(1)
        if len(feat) == 0:
            return
        filled = self.score > -torch.inf  # (F, K)
        old_feat = torch.arange(F, device=feat.device).unsqueeze(1).expand(F, K)[filled]
        old_slot = filled.nonzero()  # (E, 2)
        all_feat = torch.cat([old_feat, feat])
        all_score = torch.cat([self.score[filled], score.double()])
        all_order = torch.cat([self.order[filled], order])
        source = torch.cat(
            [torch.arange(len(old_feat), device=feat.device), -1 - torch.arange(len(feat), device=feat.device)]
        )
        perm = _lexsort(all_feat, -all_score, all_order)
        f_sorted = all_feat[perm]
        counts = torch.bincount(f_sorted, minlength=F)
        starts = counts.cumsum(0) - counts
        rank = torch.arange(len(perm), device=feat.device) - starts[f_sorted]
        chosen = rank < K
        perm, f_sorted, rank = perm[chosen], f_sorted[chosen], rank[chosen]
        src = source[perm]
        new = Selection.empty(F, K, self.tokens.shape[2], feat.device)
        new.score[f_sorted, rank] = all_score[perm]
        new.order[f_sorted, rank] = all_order[perm]
        from_old = src >= 0
        rows = old_slot[src[from_old]]
        new.tokens[f_sorted[from_old], rank[from_old]] = self.tokens[rows[:, 0], rows[:, 1]]
        new.acts[f_sorted[from_old], rank[from_old]] = self.acts[rows[:, 0], rows[:, 1]]
        from_new = ~from_old
        if from_new.any():
            idx = -1 - src[from_new]
            toks, acts = context(cand[idx])
            new.tokens[f_sorted[from_new], rank[from_new]] = toks.to(torch.int32)
            new.acts[f_sorted[from_new], rank[from_new]] = acts.float()
        self.score, self.order, self.tokens, self.acts = new.score, new.order, new.tokens, new.acts

    def merge(self, other: Selection) -> None:
        """Select again from the union of self and other (other's contexts come along)."""
        filled = other.score > -torch.inf
        feat = torch.arange(other.score.shape[0], device=filled.device).unsqueeze(1).expand_as(filled)[filled]
        toks, acts = other.tokens[filled], other.acts[filled]
        self.update(feat, other.score[filled], other.order[filled], lambda idx: (toks[idx], acts[idx]))

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.score": self.score, f"{prefix}.order": self.order, f"{prefix}.tokens": self.tokens,
                f"{prefix}.acts": self.acts}  # fmt: skip

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], prefix: str) -> Selection:
        return cls(t[f"{prefix}.score"], t[f"{prefix}.order"], t[f"{prefix}.tokens"], t[f"{prefix}.acts"])


def _lexsort(primary: torch.Tensor, secondary: torch.Tensor, tertiary: torch.Tensor) -> torch.Tensor:
    """Permutation sorting by (primary, secondary, tertiary) ascending: stable sorts, last key first."""
    perm = torch.argsort(tertiary, stable=True)
    perm = perm[torch.argsort(secondary[perm], stable=True)]
    return perm[torch.argsort(primary[perm], stable=True)]


class LayerStats:
    """The running statistics of one layer's F features (see the module docstring)."""

    def __init__(self, F: int, cfg, device="cpu"):
        self.F, self.C, self.before = F, cfg.context, cfg.context_before
        self.count = torch.zeros(F, dtype=torch.int64, device=device)
        self.total = torch.zeros(F, dtype=torch.float64, device=device)
        self.hist = torch.zeros(F, N_BINS, dtype=torch.int64, device=device)
        self.top = Selection.empty(F, cfg.top_k, self.C, device)
        self.sample = Selection.empty(F, cfg.sample_size, self.C, device)

    def _contexts(self, tokens: torch.Tensor, acts: torch.Tensor, b: torch.Tensor, p: torch.Tensor, f: torch.Tensor):
        """Tokens and feature-f activations (n, C) around (window b, position p); -1 / 0 outside the window."""
        S = tokens.shape[1]
        pos = p.unsqueeze(1) + torch.arange(-self.before, self.C - self.before, device=p.device)  # (n, C)
        inside = (pos >= 0) & (pos < S)
        pos_c = pos.clamp(0, S - 1)
        toks = torch.where(inside, tokens[b.unsqueeze(1), pos_c], -1)
        a = torch.where(inside, acts[b.unsqueeze(1), pos_c, f.unsqueeze(1)], 0.0)
        return toks, a

    def update(self, acts: torch.Tensor, tokens: torch.Tensor, window_ids: torch.Tensor, layer_offset: int) -> None:
        """One batch: acts (B, S, F) already zero at BOS and padding, tokens (B, S) (-1 at padding),
        window_ids (B,) global window numbers; layer_offset numbers this layer's features globally."""
        B, S, F = acts.shape
        b, p, f = acts.nonzero(as_tuple=True)  # every non-zero activation
        v = acts[b, p, f]
        self.count += torch.bincount(f, minlength=F)
        self.total.index_add_(0, f, v.double())
        self.hist.view(-1).index_add_(0, f * N_BINS + bin_index(v), torch.ones_like(f))
        order = window_ids[b] * S + p
        key = sample_key(order, f + layer_offset)
        self.sample.update(f, key.double(), order, lambda i: self._contexts(tokens, acts, b[i], p[i], f[i]))
        # top: one candidate per (window, feature), at the window's max token (the first one on ties)
        best, arg = acts.max(1)  # (B, F)
        wb, wf = (best > 0).nonzero(as_tuple=True)
        wp = arg[wb, wf]
        self.top.update(wf, best[wb, wf].double(), window_ids[wb] * S + wp,
                        lambda i: self._contexts(tokens, acts, wb[i], wp[i], wf[i]))  # fmt: skip

    def merge(self, other: LayerStats) -> None:
        self.count += other.count
        self.total += other.total
        self.hist += other.hist
        self.top.merge(other.top)
        self.sample.merge(other.sample)

    def tensors(self, layer: int) -> dict[str, torch.Tensor]:
        p = f"layer{layer}"
        out = {f"{p}.count": self.count, f"{p}.total": self.total, f"{p}.hist": self.hist}
        return out | self.top.tensors(f"{p}.top") | self.sample.tensors(f"{p}.sample")

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], layer: int, cfg) -> LayerStats:
        p = f"layer{layer}"
        self = cls.__new__(cls)
        self.F, self.C, self.before = t[f"{p}.count"].shape[0], cfg.context, cfg.context_before
        self.count, self.total, self.hist = t[f"{p}.count"], t[f"{p}.total"], t[f"{p}.hist"]
        self.top = Selection.from_tensors(t, f"{p}.top")
        self.sample = Selection.from_tensors(t, f"{p}.sample")
        return self

    def to(self, device) -> LayerStats:
        for name in ("count", "total", "hist"):
            setattr(self, name, getattr(self, name).to(device))
        for sel in (self.top, self.sample):
            for name in ("score", "order", "tokens", "acts"):
                setattr(sel, name, getattr(sel, name).to(device))
        return self


def quantile_from_hist(counts: torch.Tensor, q: float) -> float:
    """The q-quantile of the activations counted in `counts` (N_BINS,), interpolated (log scale) in its bin."""
    n = int(counts.sum())
    if n == 0:
        return 0.0
    cum = counts.cumsum(0).double()
    target = q * n
    i = int(torch.searchsorted(cum, torch.tensor([target], dtype=torch.float64), right=False).clamp(max=N_BINS - 1))
    i = max(i, int((counts > 0).nonzero()[0]))
    lo = 0.0 if i == 0 else float(EDGES[i - 1])
    hi = float(EDGES[i]) if i < len(EDGES) else lo * 10
    below = float(cum[i - 1]) if i > 0 else 0.0
    frac = min(max((target - below) / max(float(counts[i]), 1.0), 0.0), 1.0)
    if lo <= 0:
        return hi * frac
    return lo * (hi / lo) ** frac
