"""Where transcoders read and write, in our explicit forward: the one place these rules live.

    input sites (what the encoder reads), from the residual r_mid after attention:
        hook_resid_mid        r_mid itself
        ln2.hook_normalized   [r_mid - mean] * s2, the pre-MLP norm without its gain
        mlp.hook_in           ln2(r_mid) = that times the gain, plus the bias: what the MLP reads
    output sites (what the decoder writes):
        mlp.hook_out          the MLP module's output, before any post-MLP norm (Gemma-2/3)
        hook_mlp_out          what enters the residual: after the post-MLP norm (= mlp.hook_out elsewhere)

The forward (layers.py) and the transposes (frozen.py) both read these functions, so a site
cannot mean one thing going forward and another going back. models/hooks.py places the same
sites on Hugging Face modules for training.
"""

from __future__ import annotations

import torch

from ..transcoders.transcoder import INPUT_HOOKS, OUTPUT_HOOKS
from .norms import apply_norm, norm_T, normalize
from .weights import Block, Norm

INPUT_SITES = INPUT_HOOKS
OUTPUT_SITES = OUTPUT_HOOKS


def site_input(site: str, ln2: Norm, r_mid: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The value at input `site` from r_mid (..., d) and the pre-MLP norm's scale (..., 1)."""
    if site == "hook_resid_mid":
        return r_mid
    if site == "ln2.hook_normalized":
        return normalize(ln2, r_mid, scale)
    return apply_norm(ln2, r_mid, scale)


def site_input_T(site: str, ln2: Norm, g_in: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Transpose of site_input with the scale frozen: cotangent at the site -> cotangent at r_mid."""
    if site == "hook_resid_mid":
        return g_in
    return norm_T(ln2, g_in, scale, with_gain=site == "mlp.hook_in")


def norm_before_output(site: str, block: Block) -> Norm | None:
    """The norm between the MLP module's output and output `site`, if any (Gemma's post-MLP norm)."""
    return block.post_mlp_norm if site == "hook_mlp_out" else None


def norm_after_output(site: str, block: Block) -> Norm | None:
    """The norm between output `site` and the residual stream, if any (Gemma's post-MLP norm)."""
    return block.post_mlp_norm if site == "mlp.hook_out" else None
