"""One class for both transcoder kinds.

A per-layer transcoder (PLT) and a cross-layer transcoder (CLT) differ only in how many
layers a feature writes to: a PLT feature read at layer l writes to layer l alone, a CLT
feature writes to every layer l' >= l. So both are stored the same way, per source layer l:

    W_enc[l]    (F_l, d)            pre-activation h = x @ W_enc[l].T + b_enc[l]
    b_enc[l]    (F_l,)
    threshold[l](F_l,) or None      JumpReLU only
    W_dec[l]    (F_l, n_out_l, d)   n_out_l = 1 (PLT) or L - l (CLT): W_dec[l][f, j] writes to layer l + j
    b_dec[l]    (d,)                output bias of layer l (added once per output layer)
    W_skip[l]   (d, d) or None      skip(x) = x @ W_skip[l].T, the same convention for PLT and CLT

Reconstruction of the MLP output at layer l':
    y[l'] = sum_{l <= l'} a[l] @ W_dec[l][:, l' - l] + b_dec[l'] + skip_{l'}(x[l'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .activations import ACTIVATIONS, apply_activation

INPUT_HOOKS = ("hook_resid_mid", "ln2.hook_normalized", "mlp.hook_in")
OUTPUT_HOOKS = ("hook_mlp_out", "mlp.hook_out")


def normalize_hook_name(name: str, allowed: tuple[str, ...], role: str) -> str:
    """Accept `blocks.{l}.<hook>` or `<hook>`; reject anything we cannot place."""
    short = name
    if short.startswith("blocks."):
        parts = short.split(".", 2)
        short = parts[2] if len(parts) == 3 else short
    if short not in allowed:
        raise ValueError(
            f"unknown transcoder {role} hook {name!r}; supported {role} hooks are {list(allowed)} "
            "(TransformerLens names, with or without a 'blocks.{l}.' prefix)"
        )
    return short


@dataclass
class Transcoders:
    """A full set of transcoders for a model, one entry per layer (see module docstring)."""

    kind: str  # "plt" or "clt"
    W_enc: list[torch.Tensor]
    b_enc: list[torch.Tensor]
    W_dec: list[torch.Tensor]
    b_dec: list[torch.Tensor]
    activation: str = "relu"
    threshold: list[torch.Tensor] | None = None
    k: int | None = None
    W_skip: list[torch.Tensor] | None = None
    input_hook: str = "hook_resid_mid"
    output_hook: str = "hook_mlp_out"
    name: str = "transcoders"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("plt", "clt"):
            raise ValueError(f"transcoder kind must be 'plt' or 'clt', got {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {ACTIVATIONS}")
        if self.activation == "jumprelu" and self.threshold is None:
            raise ValueError("a JumpReLU transcoder set needs thresholds")
        if self.activation == "topk" and not self.k:
            raise ValueError("a TopK transcoder set needs k")
        self.input_hook = normalize_hook_name(self.input_hook, INPUT_HOOKS, "input")
        self.output_hook = normalize_hook_name(self.output_hook, OUTPUT_HOOKS, "output")
        L = len(self.W_enc)
        lists = {"b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.threshold is not None:
            lists["threshold"] = self.threshold
        if self.W_skip is not None:
            lists["W_skip"] = self.W_skip
        for key, value in lists.items():
            if len(value) != L:
                raise ValueError(f"transcoders have {L} encoders but {len(value)} entries of {key}")
        d = self.W_enc[0].shape[1]
        for l in range(L):
            F = self.W_enc[l].shape[0]
            n_out = 1 if self.kind == "plt" else L - l
            if self.W_enc[l].shape != (F, d):
                raise ValueError(f"layer {l}: W_enc has shape {tuple(self.W_enc[l].shape)}, expected ({F}, {d})")
            if self.W_dec[l].shape != (F, n_out, d):
                raise ValueError(
                    f"layer {l}: W_dec has shape {tuple(self.W_dec[l].shape)}, expected ({F}, {n_out}, {d}) "
                    f"for a {self.kind.upper()}"
                )
            if self.b_enc[l].shape != (F,) or self.b_dec[l].shape != (d,):
                raise ValueError(f"layer {l}: b_enc must be ({F},) and b_dec ({d},)")
            if self.threshold is not None and self.threshold[l].shape != (F,):
                raise ValueError(f"layer {l}: threshold must have shape ({F},)")
            if self.W_skip is not None and self.W_skip[l].shape != (d, d):
                raise ValueError(f"layer {l}: W_skip must have shape ({d}, {d})")

    # --- shape facts -------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.W_enc)

    @property
    def d_model(self) -> int:
        return self.W_enc[0].shape[1]

    def width(self, layer: int) -> int:
        return self.W_enc[layer].shape[0]

    @property
    def has_skip(self) -> bool:
        return self.W_skip is not None

    def output_layers(self, layer: int) -> range:
        """Layers that features read at `layer` write to."""
        return range(layer, layer + self.W_dec[layer].shape[1])

    # --- maths -------------------------------------------------------------------------
    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations (..., F_l) of layer `layer` for inputs x (..., d)."""
        return x @ self.W_enc[layer].T + self.b_enc[layer]

    def activate(self, layer: int, pre: torch.Tensor) -> torch.Tensor:
        threshold = None if self.threshold is None else self.threshold[layer]
        return apply_activation(self.activation, pre, threshold, self.k)

    def skip(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        if self.W_skip is None:
            return None
        return x @ self.W_skip[layer].T

    def reconstruct(self, acts: list[torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """MLP outputs (L, T, d) rebuilt from activations acts[l] (T, F_l) and inputs (L, T, d)."""
        out = torch.stack([self.b_dec[l].expand_as(inputs[l]).clone() for l in range(self.n_layers)])
        for l in range(self.n_layers):
            for j, target in enumerate(self.output_layers(l)):
                out[target] += acts[l] @ self.W_dec[l][:, j]
            skip = self.skip(l, inputs[l])
            if skip is not None:
                out[l] += skip
        return out

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Transcoders:
        """Move/cast every tensor in place and return self."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        for key in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, [move(t) for t in value])
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc[0].dtype

    @property
    def device(self) -> torch.device:
        return self.W_enc[0].device
