"""The real-model tier: every test here is marked `real` (select with `pytest -m real`, skip with
`-m "not real"`). The models come from PyPI wheels (see models.py) and their converted folders are
cached under ~/.cache/circuit-atlas between runs on the same machine."""

from __future__ import annotations

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
for p in (_HERE, os.path.dirname(_HERE)):  # tests/real (models, calibrate) and tests (oracle)
    if p not in sys.path:
        sys.path.insert(0, p)


def pytest_configure(config):
    config.addinivalue_line("markers", "real: needs the real pretrained models (SmolLM2-135M, Gemma-3-270M wheels)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.fspath).startswith(_HERE + os.sep):
            item.add_marker(pytest.mark.real)
