"""Transcoder training: `train_transcoders(model_dir, data, out, TrainConfig(...))`, or the
`circuit-atlas train-transcoders` command (see cli.py)."""

from .config import TrainConfig
from .metrics import evaluate
from .trainer import TrainResult, load_causal_lm, train_transcoders

__all__ = ["TrainConfig", "TrainResult", "train_transcoders", "load_causal_lm", "evaluate"]
