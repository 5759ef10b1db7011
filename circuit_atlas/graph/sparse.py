"""Compressed sparse rows (CSR): how a Graph holds its edges.

Row i's entries are `sources[indptr[i]:indptr[i+1]]` (column indices, strictly increasing)
with `values[...]` beside them. Only non-zero entries are stored, so memory is
12 bytes per edge (int32 column, float32 value, plus the row's int64 offset) and never
rows x columns. Everything the graph computes on edges (influence, pruning, scores, export)
is a pass over the `nnz` entries:

    row_ids            (nnz,)  the row of each entry, expanded from indptr
    row_sum(x)         (R,)    Σ over each row's entries of x (nnz,)
    matvec(x)          (R,)    M x for x (C,)
    rmatvec(v)         (C,)    vᵀ M for v (R,): every entry sends v[row] · value to its column

The passes behind row_sum, matvec, rmatvec and abs_normalized walk the entries in blocks of whole rows
(about 2^20 entries each), so their temporaries are block-sized, not nnz-sized.

`torch.sparse_csr_tensor` is not used: its CPU kernels neither cover the transposed
product we need nor keep int32 indices, and a plain triple saves and hashes simply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INDEX_DTYPE = torch.int32  # column indices: graphs have far fewer than 2^31 nodes
INDPTR_DTYPE = torch.int64  # offsets: a graph may have more than 2^31 edges
BLOCK = 1 << 20  # entries per block of the blocked passes


@dataclass
class CSR:
    """(n_rows, n_cols) sparse matrix: indptr (R+1,) int64, sources (nnz,) int32, values (nnz,) float32."""

    indptr: torch.Tensor
    sources: torch.Tensor
    values: torch.Tensor
    n_cols: int

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0]) - 1

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_cols)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def empty(cls, n_rows: int, n_cols: int) -> CSR:
        return cls(
            torch.zeros(n_rows + 1, dtype=INDPTR_DTYPE),
            torch.zeros(0, dtype=INDEX_DTYPE),
            torch.zeros(0, dtype=torch.float32),
            n_cols,
        )

    @classmethod
    def from_dense(cls, dense: torch.Tensor) -> CSR:
        """The non-zero entries of a dense (R, C) tensor (row-major order, so columns ascend per row)."""
        if dense.dim() != 2:
            raise ValueError(f"dense edges must be 2-D (rows, sources), got shape {tuple(dense.shape)}")
        dense = dense.detach().cpu()
        rows, cols = dense.nonzero(as_tuple=True)
        counts = torch.bincount(rows, minlength=dense.shape[0])
        return cls(
            _indptr(counts),
            cols.to(INDEX_DTYPE),
            dense[rows, cols].to(torch.float32),
            int(dense.shape[1]),
        )

    @classmethod
    def from_coo(cls, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n_rows: int, n_cols: int) -> CSR:
        """Entries given as (row, col, value) triples in any order; repeated (row, col) pairs are summed."""
        rows, cols = rows.long(), cols.long()
        values = values.to(torch.float32)
        key = rows * max(n_cols, 1) + cols
        key, inverse = torch.unique(key, sorted=True, return_inverse=True)
        summed = torch.zeros(key.shape[0], dtype=torch.float32).index_add_(0, inverse, values)
        keep = summed != 0
        key, summed = key[keep], summed[keep]
        r = key // max(n_cols, 1)
        return cls(_indptr(torch.bincount(r, minlength=n_rows)), (key % max(n_cols, 1)).to(INDEX_DTYPE), summed, n_cols)

    @classmethod
    def cat(cls, parts: list[CSR], n_cols: int) -> CSR:
        """Stack row blocks (each already CSR over the same columns) into one matrix."""
        if not parts:
            return cls.empty(0, n_cols)
        counts = torch.cat([p.indptr.diff() for p in parts])
        return cls(
            _indptr(counts),
            torch.cat([p.sources for p in parts]),
            torch.cat([p.values for p in parts]),
            n_cols,
        )

    # --- reads -------------------------------------------------------------------------
    def row_counts(self) -> torch.Tensor:
        """(R,) int64: stored entries per row."""
        return self.indptr.diff()

    def row_ids(self) -> torch.Tensor:
        """(nnz,) int32: the row of each entry."""
        return torch.repeat_interleave(torch.arange(self.n_rows, dtype=INDEX_DTYPE), self.row_counts())

    def _bounds(self) -> list[tuple[int, int, int, int]]:
        """(first row, end row, first entry, end entry) of consecutive row ranges of about BLOCK entries."""
        cuts = torch.arange(0, self.nnz, BLOCK, dtype=INDPTR_DTYPE)
        first = torch.searchsorted(self.indptr, cuts, right=True) - 1  # row holding each cut
        bounds = torch.unique(torch.cat([first, torch.tensor([self.n_rows])])).tolist()
        out = []
        for r0, r1 in zip(bounds[:-1], bounds[1:]):
            start, end = int(self.indptr[r0]), int(self.indptr[r1])
            if end > start:
                out.append((r0, r1, start, end))
        return out

    def _rows(self, r0: int, r1: int) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(r0, r1), self.indptr[r0 + 1 : r1 + 1] - self.indptr[r0:r1])

    def blocks(self):
        """Yield (start, end, rows): consecutive row ranges of about BLOCK entries; entries [start, end)
        and rows (end - start,) int64, the row of each of them."""
        for r0, r1, start, end in self._bounds():
            yield start, end, self._rows(r0, r1)

    def expand(self, x: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        """(entries of rows r0..r1,): x[row] (x (R,)) repeated over each of the row's entries."""
        return torch.repeat_interleave(x[r0:r1], self.indptr[r0 + 1 : r1 + 1] - self.indptr[r0:r1])

    def row_sum(self, x: torch.Tensor) -> torch.Tensor:
        """(R,): Σ of x (nnz,) over each row's entries (bool x: counts, int64)."""
        dtype = torch.int64 if x.dtype == torch.bool else x.dtype
        # a segment sum per block (no row index per entry); integers are summed exactly in float64 (< 2^53)
        work = dtype if dtype.is_floating_point else torch.float64
        out = torch.zeros(self.n_rows, dtype=dtype)
        for r0, r1, start, end in self._bounds():
            lengths = self.indptr[r0 + 1 : r1 + 1] - self.indptr[r0:r1]
            out[r0:r1] = torch.segment_reduce(x[start:end].to(work), "sum", lengths=lengths, unsafe=True).to(dtype)
        return out

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """M x: (C,) -> (R,) float32. Row r gets Σ over its entries (r, c, a) of a · x[c]."""
        out = torch.zeros(self.n_rows, dtype=torch.float32)
        x = x.to(torch.float32)
        for r0, r1, start, end in self._bounds():
            lengths = self.indptr[r0 + 1 : r1 + 1] - self.indptr[r0:r1]
            products = self.values[start:end] * x[self.sources[start:end]]
            out[r0:r1] = torch.segment_reduce(products, "sum", lengths=lengths, unsafe=True)
        return out

    def rmatvec(self, v: torch.Tensor) -> torch.Tensor:
        """vᵀ M: (R,) -> (C,) float32. Each entry (r, c, a) adds v[r] · a to column c."""
        out = torch.zeros(self.n_cols, dtype=torch.float32)
        for r0, r1, start, end in self._bounds():
            if bool(v[r0:r1].any()):  # rows without mass send nothing (most blocks, late in propagation)
                out.index_add_(0, self.sources[start:end], self.values[start:end] * self.expand(v, r0, r1))
        return out

    def scale_rows_(self, scale: torch.Tensor, *, divide: bool = False) -> CSR:
        """In place: row r's values times scale[r] (R,) (divided by it if `divide`). Returns self."""
        for r0, r1, start, end in self._bounds():
            if divide:
                self.values[start:end] /= self.expand(scale, r0, r1)
            else:
                self.values[start:end] *= self.expand(scale, r0, r1)
        return self

    def take_rows(self, index: torch.Tensor) -> CSR:
        """The rows `index` (any order, repeats allowed), as a new CSR."""
        index = torch.as_tensor(index, dtype=torch.long)
        counts = self.row_counts()[index]
        indptr = _indptr(counts)
        # entry j of the result comes from self.indptr[index[row]] + (j - indptr[row])
        rows = torch.repeat_interleave(torch.arange(index.numel()), counts)
        gather = self.indptr[index][rows] + (torch.arange(int(indptr[-1])) - indptr[rows])
        return CSR(indptr, self.sources[gather], self.values[gather], self.n_cols)

    def mask_entries(self, keep: torch.Tensor) -> CSR:
        """Only the entries where keep (nnz,) bool is set (row structure kept, emptied rows stay)."""
        counts = self.row_sum(keep)
        return CSR(_indptr(counts), self.sources[keep], self.values[keep], self.n_cols)

    def to_dense(self) -> torch.Tensor:
        """(R, C) float32: an explicit dense export."""
        dense = torch.zeros(self.n_rows, self.n_cols, dtype=torch.float32)
        dense[self.row_ids().long(), self.sources.long()] = self.values
        return dense

    def abs_normalized(self) -> CSR:
        """Â[r, c] = |M[r, c]| / max(Σ_c |M[r, c]|, 1e-10) per row, same structure (new values)."""
        values = self.values.abs()
        norm = CSR(self.indptr, self.sources, values, self.n_cols)
        return norm.scale_rows_(norm.row_sum(values).clamp_min(1e-10), divide=True)


def _indptr(counts: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(counts.shape[0] + 1, dtype=INDPTR_DTYPE)
    torch.cumsum(counts.to(INDPTR_DTYPE), dim=0, out=out[1:])
    return out


def check_csr(indptr: torch.Tensor, sources: torch.Tensor, values: torch.Tensor, n_rows: int, n_cols: int) -> None:
    """Raise ValueError naming what is wrong unless the triple is a valid (n_rows, n_cols) CSR."""
    if indptr.dim() != 1 or indptr.shape[0] != n_rows + 1:
        raise ValueError(f"edge_indptr has shape {tuple(indptr.shape)}, expected ({n_rows + 1},) for {n_rows} rows")
    if sources.dim() != 1 or values.dim() != 1 or sources.shape != values.shape:
        raise ValueError(
            f"edge_sources {tuple(sources.shape)} and edge_values {tuple(values.shape)} must be 1-D of equal length"
        )
    nnz = sources.shape[0]
    if int(indptr[0]) != 0 or int(indptr[-1]) != nnz or bool((indptr.diff() < 0).any()):
        raise ValueError(f"edge_indptr must start at 0, never decrease, and end at the {nnz} stored edges")
    if nnz and (int(sources.min()) < 0 or int(sources.max()) >= n_cols):
        raise ValueError(f"edge_sources must lie in [0, {n_cols}) (the source nodes)")
    if nnz > 1:
        ascending = sources[1:] > sources[:-1]  # (nnz-1,) pair (j, j+1)
        starts = indptr[1:-1]
        starts = starts[(starts > 0) & (starts < nnz)]
        ascending[starts - 1] = True  # a new row may start lower
        if not bool(ascending.all()):
            raise ValueError("edge_sources must be strictly increasing within each row (sorted, no repeats)")
