"""Shared helpers for the transcoder tests (random sets come from circuit_atlas.transcoders.random)."""

from __future__ import annotations

import pytest
import torch

from circuit_atlas.transcoders import Transcoders

TENSOR_LISTS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip")


def check_same(a: Transcoders, b: Transcoders, *, metadata: bool = True) -> None:
    """Assert two sets hold identical tensors (bitwise) and settings."""
    assert (a.kind, a.activation, a.k, a.input_hook, a.output_hook) == (
        b.kind,
        b.activation,
        b.k,
        b.input_hook,
        b.output_hook,
    )
    for key in TENSOR_LISTS:
        xs, ys = getattr(a, key), getattr(b, key)
        assert (xs is None) == (ys is None), key
        if xs is not None:
            assert len(xs) == len(ys), key
            for l, (x, y) in enumerate(zip(xs, ys)):
                assert x.dtype == y.dtype and x.shape == y.shape, (key, l, x.dtype, y.dtype, x.shape, y.shape)
                assert torch.equal(x, y), (key, l)
    if metadata:
        assert a.name == b.name
        assert a.metadata == b.metadata


@pytest.fixture
def same():
    return check_same
