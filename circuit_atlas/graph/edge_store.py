"""Where attribution writes edge rows as it computes them: sparse from the first batch on.

A batch of rows arrives dense over its causal cone only, (B, C) with C the cone's columns
(attribution/backward.py); `EdgeStore.add` keeps its non-zero entries as one CSR chunk, so no
(all rows x all sources) matrix ever exists. `to_csr` assembles the chunks into the graph's
CSR, rows ordered by the slot each was written to, copying chunk by chunk into arrays of the
final size (peak: the final edges plus one chunk).

Two places to keep the chunks:
    in memory            (directory=None, the default)
    memory-mapped files  (directory=a folder): chunks are appended to files there and the final
                         arrays are memory-mapped too, so the resident set stays small for graphs
                         larger than RAM (the files are unlinked at once; the mappings keep them).

Optional edge budget (a fraction f in (0, 1)): entries whose |value| is below f times their
row's absolute mass Σ|row| are dropped. `report()` states what was dropped; exact mode
(budget None) keeps every non-zero entry.
"""

from __future__ import annotations

import math
import mmap
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from .sparse import CSR, INDEX_DTYPE, INDPTR_DTYPE, _indptr

ADD_ENTRIES = 1 << 24  # dense entries thinned at once by EdgeStore.add (its temporaries: ~10 bytes each)


def check_edge_budget(value: float | None) -> float | None:
    """None, or a float in (0, 1); otherwise one ValueError saying what is allowed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value < 1:
        raise ValueError(
            f"edge_budget must be None (exact: keep every edge) or a fraction in (0, 1) of each row's "
            f"absolute mass below which edges are dropped, got {value!r}"
        )
    return float(value)


@dataclass
class _Chunk:
    slots: torch.Tensor  # (B,) int64 row slot of each row
    counts: torch.Tensor  # (B,) int64 stored entries per row
    sources: torch.Tensor | None  # (nnz,) int32, None when on disk
    values: torch.Tensor | None  # (nnz,) float32, None when on disk
    offset: int  # first entry in the on-disk files


class EdgeStore:
    """Sparse rows of a graph's edges, written batch by batch (see the module docstring)."""

    def __init__(self, n_sources: int, *, edge_budget: float | None = None, directory: str | None = None) -> None:
        self.n_sources = n_sources
        self.edge_budget = check_edge_budget(edge_budget)
        self.directory = directory
        self._chunks: list[_Chunk] = []
        self._nnz = 0
        self._total_mass = 0.0  # Σ|a| over every computed entry (float64)
        self._dropped_mass = 0.0
        self._dropped_edges = 0
        self._max_row_dropped_share = 0.0
        self._files = None
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
            self._files = tuple(
                tempfile.NamedTemporaryFile(dir=directory, prefix=f"edges-{name}-", suffix=".bin", delete=True)
                for name in ("sources", "values")
            )

    @property
    def nnz(self) -> int:
        return self._nnz

    @property
    def n_rows(self) -> int:
        return sum(int(c.slots.numel()) for c in self._chunks)

    def add(self, slots: torch.Tensor, cols: torch.Tensor, block: torch.Tensor) -> None:
        """Keep rows block (B, C) (dense over columns cols (C,) ascending) as the rows of `slots` (B,).

        Rows are thinned and stored a group at a time (about ADD_ENTRIES entries), so the masks and
        absolute values beside the block stay a few hundred MB even when its cone spans millions of sources.
        """
        block = block.detach()
        step = max(1, ADD_ENTRIES // max(block.shape[1], 1))
        for start in range(0, block.shape[0], step):
            self._add_rows(slots[start : start + step], cols, block[start : start + step])

    def _add_rows(self, slots: torch.Tensor, cols: torch.Tensor, block: torch.Tensor) -> None:
        keep = block != 0  # (B, C)
        if self.edge_budget is not None:
            absolute = block.abs()
            row_mass = absolute.sum(dim=1, dtype=torch.float64)  # (B,)
            self._total_mass += float(row_mass.sum())
            small = keep & (absolute < (self.edge_budget * row_mass).to(absolute.dtype)[:, None])
            dropped = (absolute * small).sum(dim=1, dtype=torch.float64)  # (B,)
            self._dropped_mass += float(dropped.sum())
            self._dropped_edges += int(small.sum())
            share = dropped / row_mass.clamp_min(1e-300)
            self._max_row_dropped_share = max(self._max_row_dropped_share, float(share.max()) if share.numel() else 0)
            keep &= ~small
            del absolute, small
        counts = keep.sum(dim=1).cpu().to(INDPTR_DTYPE)  # (B,)
        n = int(counts.sum())
        # row-major selection: columns ascend within each row; written straight into the chunk's pages
        sources = _own_pages(n, INDEX_DTYPE)
        values = _own_pages(n, torch.float32)
        cols = cols.to(INDEX_DTYPE)  # (C,), broadcast over the rows by masked_select
        block = block.to(torch.float32)
        if n and block.is_cpu:
            torch.masked_select(cols, keep, out=sources)
            torch.masked_select(block, keep, out=values)
        elif n:  # on an accelerator: select there, copy only the kept entries to the CPU
            sources.copy_(torch.masked_select(cols, keep))
            values.copy_(torch.masked_select(block, keep))
        chunk = _Chunk(slots.detach().cpu().long(), counts, sources, values, self._nnz)
        if self._files is not None:
            self._files[0].write(sources.numpy().tobytes())
            self._files[1].write(values.numpy().tobytes())
            chunk.sources = chunk.values = None
        self._chunks.append(chunk)
        self._nnz += int(values.numel())

    def _chunk_arrays(self, chunk: _Chunk) -> tuple[torch.Tensor, torch.Tensor]:
        if chunk.sources is not None:
            return chunk.sources, chunk.values
        n = int(chunk.counts.sum())
        for f in self._files:
            f.flush()
        src = np.fromfile(self._files[0].name, dtype=np.int32, count=n, offset=4 * chunk.offset)
        val = np.fromfile(self._files[1].name, dtype=np.float32, count=n, offset=4 * chunk.offset)
        return torch.from_numpy(src), torch.from_numpy(val)

    def _alloc(self, n: int, dtype) -> torch.Tensor:
        if self.directory is None or n == 0:
            return torch.empty(n, dtype=dtype)
        np_dtype = {torch.int32: np.int32, torch.float32: np.float32}[dtype]
        fd, path = tempfile.mkstemp(dir=self.directory, prefix="graph-edges-", suffix=".bin")
        os.close(fd)
        mapped = np.memmap(path, dtype=np_dtype, mode="w+", shape=(n,))
        os.unlink(path)  # the mapping keeps the data; nothing is left behind on disk
        return torch.from_numpy(mapped)

    def slots(self) -> torch.Tensor:
        """(R,) int64: the slot of every row written so far, in writing order."""
        if not self._chunks:
            return torch.zeros(0, dtype=torch.long)
        return torch.cat([c.slots for c in self._chunks])

    def to_csr(self, order: torch.Tensor | None = None, *, in_memory: bool = False, _consume: bool = False) -> CSR:
        """The rows as one CSR (R, n_sources).

        order: (R,) the slots in the order the result's rows should have; default: every row
        written so far, in writing order. Each slot in `order` must have been written exactly once.
        in_memory: build the result in memory even for an on-disk store (a working copy).
        """
        written = self.slots()
        if order is None:
            order = written
        order = torch.as_tensor(order, dtype=torch.long)
        if written.numel():
            n_slots = int(max(int(written.max()), int(order.max()) if order.numel() else 0)) + 1
        else:
            n_slots = int(order.max()) + 1 if order.numel() else 0
        where = torch.full((n_slots,), -1, dtype=torch.long)  # slot -> result row
        where[order] = torch.arange(order.numel())
        seen = torch.bincount(written, minlength=n_slots) if written.numel() else torch.zeros(n_slots, dtype=torch.long)
        if order.numel() and (bool((seen[order] != 1).any()) or torch.unique(order).numel() != order.numel()):
            raise ValueError("every requested row slot must have been written exactly once")
        counts = torch.zeros(order.numel(), dtype=INDPTR_DTYPE)
        for c in self._chunks:
            dest = where[c.slots]
            mine = dest >= 0
            counts[dest[mine]] = c.counts[mine]
        indptr = _indptr(counts)
        nnz = int(indptr[-1])
        alloc = (lambda n, dtype: torch.empty(n, dtype=dtype)) if in_memory else self._alloc
        sources, values = alloc(nnz, INDEX_DTYPE), alloc(nnz, torch.float32)
        for c in self._chunks:
            src, val = self._chunk_arrays(c)
            if _consume:  # free each chunk once copied: peak memory is the result plus one chunk
                c.sources = c.values = None
            dest = where[c.slots]  # (B,)
            if dest.numel() and _consecutive(dest):  # the chunk's rows are consecutive result rows: one copy
                first, last = int(indptr[int(dest[0])]), int(indptr[int(dest[-1]) + 1])
                sources[first:last] = src
                values[first:last] = val
                continue
            mine = dest >= 0
            row_ids = torch.repeat_interleave(torch.arange(c.slots.numel()), c.counts)  # (nnz_c,)
            in_row = torch.arange(row_ids.numel()) - _indptr(c.counts)[row_ids]  # index within its row
            take = mine[row_ids]
            at = indptr[dest[row_ids[take]]] + in_row[take]  # destination of each kept entry
            sources[at] = src[take]
            values[at] = val[take]
        return CSR(indptr, sources, values, self.n_sources)

    def finish(self, order: torch.Tensor | None = None) -> CSR:
        """`to_csr(order)`, freeing the chunks as they are copied; the store is closed afterwards."""
        try:
            return self.to_csr(order, _consume=True)
        finally:
            self.close()

    def report(self) -> dict:
        """What the budget dropped (JSON-ready), for graph.metadata["edge_budget"]."""
        return {
            "fraction": self.edge_budget,
            "kept_edges": self._nnz,
            "dropped_edges": self._dropped_edges,
            "total_abs_mass": self._total_mass,
            "dropped_abs_mass": self._dropped_mass,
            "dropped_share": self._dropped_mass / self._total_mass if self._total_mass > 0 else 0.0,
            "max_row_dropped_share": self._max_row_dropped_share,
        }

    def close(self) -> None:
        """Remove the on-disk chunk files (final arrays stay mapped until the graph is freed)."""
        if self._files is not None:
            for f in self._files:
                f.close()
            self._files = None
        self._chunks = []


def _consecutive(dest: torch.Tensor) -> bool:
    """dest (B,) int64 is d0, d0 + 1, ..., d0 + B - 1 with d0 >= 0."""
    return bool(dest[0] >= 0) and bool((dest - torch.arange(dest.numel()) == dest[0]).all())


def _own_pages(n: int, dtype: torch.dtype) -> torch.Tensor:
    """An (n,) CPU tensor in its own anonymous memory map, so that freeing it returns the pages to the OS.

    Chunks of a few MB would otherwise come from the malloc heap, where freed chunks stay resident:
    assembling the final CSR (copy, then free each chunk) would peak at twice the edges.
    """
    if n == 0:
        return torch.empty(0, dtype=dtype)
    size = n * torch.empty(0, dtype=dtype).element_size()
    return torch.frombuffer(mmap.mmap(-1, size), dtype=dtype, count=n)  # the tensor keeps the map alive
