"""Attribution graphs: storage, influence, pruning, scores and file formats."""

from .graph import KINDS, Graph

__all__ = ["Graph", "KINDS"]
