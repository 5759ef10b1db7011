"""Transcoder sites on a Hugging Face model, read and replaced through module hooks.

forward.py computes the sites in our own explicit forward, one prompt at a time. Training needs
them for whole batches (B, T) straight from the HF model, so here the sites are located on the
HF modules named by the `Architecture` mapping:

    hook_resid_mid        input of the pre-MLP norm (ln2)
    ln2.hook_normalized   that input normalised without the gain: [x - mean] * rsqrt(mean(x^2) + eps)
    mlp.hook_in           input of the MLP module (= ln2 output)
    mlp.hook_out          output of the MLP module
    hook_mlp_out          what enters the residual: the post-MLP norm's output (Gemma-2), else mlp.hook_out

`harvest` records an input and an output site for every layer; `replaced_mlps` swaps each MLP's
contribution for the transcoders' reconstruction (no error terms): the replacement model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..transcoders.transcoder import INPUT_HOOKS, OUTPUT_HOOKS, Transcoders, normalize_hook_name
from .architectures import Architecture, architecture_for


@dataclass
class BlockModules:
    ln2: nn.Module  # pre-MLP norm
    mlp: nn.Module
    post_mlp_norm: nn.Module | None


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def model_architecture(hf_model: nn.Module) -> Architecture:
    config = getattr(hf_model, "config", None)
    if config is None or not hasattr(config, "model_type"):
        raise ValueError(f"{type(hf_model).__name__} has no Hugging Face config; pass a transformers causal LM")
    return architecture_for(config.model_type)


def block_modules(hf_model: nn.Module, arch: Architecture) -> list[BlockModules]:
    out = []
    for block in _get(hf_model, arch.layers):
        post = _get(block, arch.post_mlp_norm) if arch.post_mlp_norm else None
        out.append(BlockModules(_get(block, arch.ln2), _get(block, arch.mlp), post))
    return out


def _norm_eps(module: nn.Module) -> float:
    eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", None) or 1e-6
    return float(eps)


def normalized(x: torch.Tensor, kind: str, eps: float) -> torch.Tensor:
    """ln2.hook_normalized from the norm's input x (..., d), computed in float32 as HF norms are."""
    h = x.float()
    if kind == "layer":
        h = h - h.mean(-1, keepdim=True)
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _first_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return next(iter(kwargs.values()))


def _tensor_out(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class _Stop(Exception):
    """Raised by the last hook of a harvest: nothing after the last layer's output is needed."""


def _register_input(bm: BlockModules, site: str, kind: str, fn) -> torch.utils.hooks.RemovableHandle:
    """Call fn(x) with the value of input `site` (B, T, d) whenever the block runs."""
    if site == "mlp.hook_in":
        return bm.mlp.register_forward_pre_hook(lambda m, a, k: fn(_first_arg(a, k)), with_kwargs=True)
    eps = _norm_eps(bm.ln2)
    if site == "hook_resid_mid":
        return bm.ln2.register_forward_pre_hook(lambda m, a, k: fn(_first_arg(a, k)), with_kwargs=True)
    return bm.ln2.register_forward_pre_hook(
        lambda m, a, k: fn(normalized(_first_arg(a, k), kind, eps)), with_kwargs=True
    )


def _output_module(bm: BlockModules, site: str) -> nn.Module:
    if site == "hook_mlp_out" and bm.post_mlp_norm is not None:
        return bm.post_mlp_norm
    return bm.mlp


@torch.no_grad()
def harvest(
    hf_model: nn.Module,
    input_ids: torch.Tensor,
    input_hook: str = "hook_resid_mid",
    output_hook: str = "hook_mlp_out",
    *,
    arch: Architecture | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Transcoder inputs and outputs, each (L, B, T, d), of one batch of token ids (B, T).

    The forward stops after the last layer's output site (no final norm or unembedding).
    """
    input_hook = normalize_hook_name(input_hook, INPUT_HOOKS, "input")
    output_hook = normalize_hook_name(output_hook, OUTPUT_HOOKS, "output")
    arch = arch or model_architecture(hf_model)
    blocks = block_modules(hf_model, arch)
    L = len(blocks)
    inputs: list[torch.Tensor | None] = [None] * L
    outputs: list[torch.Tensor | None] = [None] * L
    handles = []

    def record_output(l: int, out) -> None:
        outputs[l] = _tensor_out(out)
        if l == L - 1:
            raise _Stop

    for l, bm in enumerate(blocks):
        handles.append(_register_input(bm, input_hook, arch.norm_kind, lambda x, l=l: inputs.__setitem__(l, x)))
        module = _output_module(bm, output_hook)
        handles.append(module.register_forward_hook(lambda m, a, out, l=l: record_output(l, out)))
    try:
        hf_model(input_ids=input_ids, use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if any(x is None for x in inputs) or any(y is None for y in outputs):
        raise RuntimeError("a transcoder site was not reached during the forward pass")
    return torch.stack(inputs), torch.stack(outputs)  # type: ignore[arg-type]


@contextmanager
def replaced_mlps(
    hf_model: nn.Module,
    transcoders: Transcoders,
    *,
    arch: Architecture | None = None,
    keep_positions: int = 1,
) -> Iterator[None]:
    """Inside the block, every forward of `hf_model` runs the replacement model.

    Each MLP's contribution at the transcoders' output site becomes the reconstruction
    b_dec[l] + sum_{s <= l} a[s] @ W_dec[s][:, l - s] + skip_l(x[l]), where a[s] are the features of
    the inputs x[s] seen in this same (replaced) forward. Positions [0, keep_positions) keep the real
    MLP outputs, as attribution treats BOS (its MLP outputs are constants there).
    """
    tc = transcoders
    arch = arch or model_architecture(hf_model)
    blocks = block_modules(hf_model, arch)
    if len(blocks) != tc.n_layers:
        raise ValueError(f"transcoders have {tc.n_layers} layers but the model has {len(blocks)}")
    acts: dict[int, torch.Tensor] = {}
    inputs: dict[int, torch.Tensor] = {}

    def read(l: int, x: torch.Tensor) -> None:
        if l == 0:
            acts.clear()
            inputs.clear()
        x = x.to(tc.dtype)
        inputs[l] = x
        acts[l] = tc.activate(l, tc.encode(l, x))

    def replace(l: int, out):
        real = _tensor_out(out)
        recon = tc.b_dec[l].expand_as(inputs[l]).clone()
        for s in range(l + 1):
            if l in tc.output_layers(s):
                recon = recon + acts[s] @ tc.W_dec[s][:, l - s]
        skip = tc.skip(l, inputs[l])
        if skip is not None:
            recon = recon + skip
        recon = recon.to(real.dtype)
        recon[:, :keep_positions] = real[:, :keep_positions]
        return (recon,) + tuple(out[1:]) if isinstance(out, tuple) else recon

    handles = []
    try:
        for l, bm in enumerate(blocks):
            handles.append(_register_input(bm, tc.input_hook, arch.norm_kind, lambda x, l=l: read(l, x)))
            module = _output_module(bm, tc.output_hook)
            handles.append(module.register_forward_hook(lambda m, a, out, l=l: replace(l, out)))
        yield
    finally:
        for h in handles:
            h.remove()
