"""Transcoders: the sparse, interpretable stand-ins for a model's MLPs."""

from .formats import FORMAT_VERSION
from .io import (
    FORMATS,
    detect_format,
    load_transcoders,
    save_circuit_tracer_format,
    save_transcoders,
)
from .random import calibrate_thresholds, random_transcoders
from .transcoder import INPUT_HOOKS, OUTPUT_HOOKS, Transcoders

__all__ = [
    "Transcoders",
    "INPUT_HOOKS",
    "OUTPUT_HOOKS",
    "FORMATS",
    "FORMAT_VERSION",
    "load_transcoders",
    "save_transcoders",
    "save_circuit_tracer_format",
    "detect_format",
    "random_transcoders",
    "calibrate_thresholds",
]
