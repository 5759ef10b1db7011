"""What a dashboard build records, and how. The field docs are the CLI help (see cli.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class BuildConfig:
    """Settings of one `features build`. Everything that changes the result is recorded with it."""

    seq_len: int = 32
    """Tokens per window, BOS included; a longer document is cut into several windows."""
    tokens: int | None = None
    """Stop after this many (non-BOS) tokens of the corpus [all of it]."""
    batch_size: int = 64
    """Windows per forward pass."""
    top_k: int = 16
    """Top-activating examples kept per feature (one per window: the window's max token)."""
    sample_size: int = 32
    """Uniform sample of a feature's non-zero activations, kept to fill the quantile bands."""
    bands: int = 4
    """Quantile bands (of equal probability mass) the sampled examples are shown in."""
    band_examples: int = 5
    """Examples shown per quantile band."""
    context_before: int = 16
    """Tokens kept before the max token of an example."""
    context_after: int = 8
    """Tokens kept after the max token of an example."""
    n_logits: int = 10
    """Promoted / suppressed tokens recorded per feature (summed over output layers)."""
    n_logits_per_layer: int = 5
    """Promoted / suppressed tokens recorded per output layer (CLTs only)."""
    n_inputs: int = 10
    """Tokens that excite / inhibit a feature most through the embedding."""
    checkpoint_every: int = 50
    """Write a resumable checkpoint every this many batches (0: never)."""
    keep_state: bool = True
    """Keep the running state after the build, so more text can be added later (incremental)."""
    device: str = "cpu"
    """Where the model and encoders run (cuda where present)."""

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "top_k", "sample_size", "bands", "band_examples", "n_logits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be at least 2 (BOS and one token), got {self.seq_len}")
        if self.tokens is not None and self.tokens < 1:
            raise ValueError(f"tokens must be positive, got {self.tokens}")
        for name in ("context_before", "context_after", "n_logits_per_layer", "n_inputs", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")

    @property
    def context(self) -> int:
        """Width C of a stored example: before + the max token + after."""
        return self.context_before + 1 + self.context_after

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def result_keys(self) -> dict:
        """The settings a resumed or incremental build must share with the state it continues."""
        d = self.to_json()
        for key in ("tokens", "batch_size", "checkpoint_every", "keep_state", "device"):
            d.pop(key)
        return d
