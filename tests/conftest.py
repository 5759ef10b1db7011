"""The `gpu` marker: tests marked gpu run on CUDA when torch sees one, and are deselected (not
skipped: an import error still fails) when it does not, with one line saying so.

CIRCUIT_ATLAS_GPU_DEVICE names the device those tests use (default "cuda"); setting it, e.g. to
"cpu", runs them anyway: a way to check the gpu tests themselves on a machine without one.
"""

from __future__ import annotations

import os

import torch


def gpu_device() -> str:
    return os.environ.get("CIRCUIT_ATLAS_GPU_DEVICE", "cuda")


def _gpu_usable() -> bool:
    device = gpu_device()
    return not device.startswith("cuda") or torch.cuda.is_available()


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs on CUDA (deselected when torch.cuda.is_available() is false)")


def pytest_collection_modifyitems(config, items):
    if _gpu_usable():
        return
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu:
        return
    items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
    config.hook.pytest_deselected(items=gpu)
    config._circuit_atlas_gpu_deselected = len(gpu)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = getattr(config, "_circuit_atlas_gpu_deselected", 0)
    if n:
        terminalreporter.write_line(f"gpu: CUDA is not available; {n} gpu-marked tests deselected")
