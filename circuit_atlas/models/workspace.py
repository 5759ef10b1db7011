"""Reusable buffers for the big temporaries of batched transposes (attribution's inner loop).

Every batch of attribution rows makes the same few (B, P, d)-sized temporaries at every layer. Made
fresh each time they cost twice: the OS faults their pages in on every allocation (on this project's
2-core VM that doubled attribution's time when they were mmapped), and kept in glibc's heap their
varying sizes fragment it, so the resident set grows well past what is alive. A Workspace gives each
temporary one home, grown when a bigger one is needed and otherwise reused as a view.
"""

from __future__ import annotations

import math

import torch


class Workspace:
    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A tensor of `shape` in buffer `name`, contents undefined; valid until the next get(name)."""
        n = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != torch.device(device):
            self._buffers.pop(name, None)  # free the smaller one before allocating its successor
            buf = self._buffers[name] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n].view(shape)

    def clear(self) -> None:
        self._buffers.clear()
