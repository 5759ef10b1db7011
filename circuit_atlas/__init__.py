"""circuit-atlas: exact attribution graphs over transcoder replacement models."""

import os

# OpenMP spin-waiting makes small torch ops crawl on busy machines; it must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# ruff: noqa: E402

from .attribution.attribute import attribute
from .attribution.targets import Direction, LogitDiff
from .graph import Graph
from .replacement_model import ReplacementModel
from .transcoders import Transcoders

__version__ = "0.1.0"
__all__ = ["attribute", "Graph", "ReplacementModel", "Transcoders", "LogitDiff", "Direction", "__version__"]
