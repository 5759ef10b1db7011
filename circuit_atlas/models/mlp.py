"""The MLP, written from its weights rather than run as the Hugging Face module.

Running the HF module would tie it to the HF model's own dtype and device (and its train/eval
dropout), so a ReplacementModel in another dtype would have to cast the caller's model in place.
Reading the weights instead keeps the caller's model untouched and lets bf16 weights feed a
float32 computation (linear.py casts each matrix at use). Only the activation function is taken
from the HF module: it holds no state and is exactly the family's (SiLU, tanh-GELU, ...).

    gated (Llama, Qwen, Gemma):  down(act(gate(x)) * up(x))
    plain (GPT-2):               down(act(up(x)))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .linear import linear


@dataclass
class MLP:
    W_up: torch.Tensor  # (d_mlp, d)
    b_up: torch.Tensor | None
    W_down: torch.Tensor  # (d, d_mlp)
    b_down: torch.Tensor | None
    act: Callable[[torch.Tensor], torch.Tensor]
    W_gate: torch.Tensor | None = None  # (d_mlp, d); None for an ungated MLP
    b_gate: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """MLP output (..., d) of inputs x (..., d), in x's dtype."""
        h = linear(x, self.W_up, self.b_up)
        if self.W_gate is None:
            h = self.act(h)
        else:
            h = self.act(linear(x, self.W_gate, self.b_gate)) * h
        return linear(h, self.W_down, self.b_down)

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.W_up, self.b_up, self.W_down, self.b_down, self.W_gate, self.b_gate) if t is not None]
