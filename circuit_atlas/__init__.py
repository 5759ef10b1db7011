"""circuit-atlas: exact attribution graphs over transcoder replacement models.

The names below load on first use (module __getattr__), so `import circuit_atlas` and the command
line's --help do not pay for torch, transformers and pandas.
"""

import importlib
import os

# OpenMP spin-waiting makes small torch ops crawl on busy machines; it must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_LAZY = {
    "attribute": ".attribution.attribute",
    "Direction": ".attribution.targets",
    "LogitDiff": ".attribution.targets",
    "Graph": ".graph",
    "ReplacementModel": ".replacement_model",
    "Transcoders": ".transcoders",
}
__all__ = ["attribute", "Graph", "ReplacementModel", "Transcoders", "LogitDiff", "Direction", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
