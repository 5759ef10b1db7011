"""circuit-atlas: exact attribution graphs over transcoder replacement models."""

from .attribution.attribute import attribute
from .attribution.targets import Direction, LogitDiff
from .graph import Graph
from .replacement_model import ReplacementModel
from .transcoders import Transcoders

__version__ = "0.1.0"
__all__ = ["attribute", "Graph", "ReplacementModel", "Transcoders", "LogitDiff", "Direction", "__version__"]
