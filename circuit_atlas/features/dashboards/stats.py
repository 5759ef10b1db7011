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
        (n, C), of the candidates idx that are kept (contexts are gathered only for those).

        Slots are not kept sorted (canonical() sorts them, for saving and reading). Each feature's
        candidates are tried best first, one per feature per round: a candidate replaces the worst kept
        entry of its feature if it is better. Inserting into a bounded best-K set one by one keeps the
        best K of everything offered, whatever the order, so this equals selecting from the union."""
        K = self.score.shape[1]
        # Candidates below the worst kept score of their feature cannot enter; drop them before sorting.
        cand = (score >= self.score.min(1).values[feat]).nonzero().squeeze(1)
        if len(cand) == 0:
            return
        feat, score, order = feat[cand], score[cand].double(), order[cand]
        perm = _lexsort(feat, -score, order)  # per feature, best first
        feat, score, order, cand = feat[perm], score[perm], order[perm], cand[perm]
        counts = torch.bincount(feat)
        rank = torch.arange(len(feat), device=feat.device) - (counts.cumsum(0) - counts)[feat]
        kept_f, kept_k, kept_i = [], [], []
        for r in range(int(rank.max()) + 1):
            idx = (rank == r).nonzero().squeeze(1)
            f = feat[idx]
            row_score, row_order = self.score[f], self.order[f]  # (n, K)
            worst_score = row_score.min(1).values
            worst = torch.where(row_score == worst_score.unsqueeze(1), row_order, torch.iinfo(torch.int64).min).argmax(
                1
            )
            worst_order = row_order.gather(1, worst.unsqueeze(1)).squeeze(1)
            better = (score[idx] > worst_score) | ((score[idx] == worst_score) & (order[idx] < worst_order))
            if not better.any():
                break  # a feature's later candidates are worse than its earlier ones: none can enter
            idx, f, k = idx[better], f[better], worst[better]
            self.score[f, k] = score[idx]
            self.order[f, k] = order[idx]
            kept_f.append(f)
            kept_k.append(k)
            kept_i.append(idx)
        if not kept_f:
            return
        # Contexts of the final occupants only: a slot filled twice in this call keeps its last candidate.
        f, k, i = torch.cat(kept_f), torch.cat(kept_k), torch.cat(kept_i)
        slots, which = torch.unique(f * K + k, return_inverse=True)
        last = torch.full((len(slots),), -1, dtype=torch.long, device=f.device)
        last.scatter_reduce_(0, which, torch.arange(len(which), device=f.device), "amax")
        final = torch.zeros(len(which), dtype=torch.bool, device=f.device)
        final[last] = True
        f, k, i = f[final], k[final], i[final]
        toks, acts = context(cand[i])
        self.tokens[f, k] = toks.to(torch.int32)
        self.acts[f, k] = acts.float()

    def canonical(self) -> Selection:
        """The same entries with each feature's slots sorted: score desc, then order asc, empty last."""
        F, K = self.score.shape
        row = torch.arange(F, device=self.score.device).unsqueeze(1).expand(F, K).reshape(-1)
        order = torch.where(self.score > -torch.inf, self.order, torch.iinfo(torch.int64).max).reshape(-1)
        perm = _lexsort(row, -self.score.reshape(-1), order).view(F, K)
        perm = perm - (torch.arange(F, device=perm.device) * K).unsqueeze(1)
        take = torch.gather
        return Selection(take(self.score, 1, perm), take(self.order, 1, perm),
                         take(self.tokens, 1, perm.unsqueeze(2).expand_as(self.tokens)),
                         take(self.acts, 1, perm.unsqueeze(2).expand_as(self.acts)))  # fmt: skip

    def merge(self, other: Selection) -> None:
        """Select again from the union of self and other (other's contexts come along)."""
        filled = other.score > -torch.inf
        feat = torch.arange(other.score.shape[0], device=filled.device).unsqueeze(1).expand_as(filled)[filled]
        toks, acts = other.tokens[filled], other.acts[filled]
        self.update(feat, other.score[filled], other.order[filled], lambda idx: (toks[idx], acts[idx]))

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        c = self.canonical()
        self.score, self.order, self.tokens, self.acts = c.score, c.order, c.tokens, c.acts
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

    def update(self, acts: torch.Tensor, tokens: torch.Tensor, window_ids: torch.Tensor, layer_offset: int,
               seq_len: int) -> None:  # fmt: skip
        """One batch: acts (B, S, F) already zero at BOS and padding, tokens (B, S) (-1 at padding),
        window_ids (B,) global window numbers; layer_offset numbers this layer's features globally;
        seq_len the build's window length (order = window * seq_len + position)."""
        B, S, F = acts.shape
        b, p, f = acts.nonzero(as_tuple=True)  # every non-zero activation
        v = acts[b, p, f]
        self.count += torch.bincount(f, minlength=F)
        self.total.index_add_(0, f, v.double())
        self.hist.view(-1).index_add_(0, f * N_BINS + bin_index(v), torch.ones_like(f))
        order = window_ids[b] * seq_len + p
        key = sample_key(order, f + layer_offset)
        self.sample.update(f, key.double(), order, lambda i: self._contexts(tokens, acts, b[i], p[i], f[i]))
        # top: one candidate per (window, feature), at the window's max token (the first one on ties)
        best, arg = acts.max(1)  # (B, F)
        wb, wf = (best > 0).nonzero(as_tuple=True)
        wp = arg[wb, wf]
        self.top.update(wf, best[wb, wf].double(), window_ids[wb] * seq_len + wp,
                        lambda i: self._contexts(tokens, acts, wb[i], wp[i], wf[i]))  # fmt: skip

    def merge(self, other: LayerStats) -> None:
        self.count += other.count
        self.total += other.total
        self.hist += other.hist
        self.top.merge(other.top)
        self.sample.merge(other.sample)

    def canonicalize(self) -> LayerStats:
        self.top, self.sample = self.top.canonical(), self.sample.canonical()
        return self

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

    @classmethod
    def concat(cls, parts: list[LayerStats]) -> LayerStats:
        """One LayerStats over the features of all parts (every layer at once: a quarter of the calls)."""
        self = cls.__new__(cls)
        self.F, self.C, self.before = sum(p.F for p in parts), parts[0].C, parts[0].before
        for name in ("count", "total", "hist"):
            setattr(self, name, torch.cat([getattr(p, name) for p in parts]))
        for sel in ("top", "sample"):
            fields = [
                torch.cat([getattr(getattr(p, sel), k) for p in parts]) for k in ("score", "order", "tokens", "acts")
            ]
            setattr(self, sel, Selection(*fields))
        return self

    def split(self, widths: list[int]) -> list[LayerStats]:
        """Per-layer views (row slices) of a concatenated LayerStats."""
        out, start = [], 0
        for w in widths:
            part = LayerStats.__new__(LayerStats)
            part.F, part.C, part.before = w, self.C, self.before
            for name in ("count", "total", "hist"):
                setattr(part, name, getattr(self, name)[start : start + w])
            for sel in ("top", "sample"):
                src = getattr(self, sel)
                setattr(
                    part,
                    sel,
                    Selection(*(getattr(src, k)[start : start + w] for k in ("score", "order", "tokens", "acts"))),
                )
            out.append(part)
            start += w
        return out

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
