"""The trainable transcoder set: parameters, loss, data-aware initialisation, export.

Parameters live stacked over layers (one width for all layers), in normalised units: inputs and
outputs of layer l are scaled by in_scale[l] / out_scale[l] so that E|x|^2 = E|y|^2 = d. Export
folds the scales back, so the saved `Transcoders` read and write raw model activations.

    pre[l]  = x_n[l] @ W_enc[l].T + b_enc[l]                     (L, N, F)
    a[l]    = act(pre[l])                                        jumprelu | relu | topk | batchtopk
    y_hat[l'] = sum_{l <= l'} a[l] @ W_dec[l][:, l' - l] + b_dec[l'] + x_n[l'] @ W_skip[l'].T

Loss, averaged over the N tokens of a batch:

    sum_l |y_hat[l] - y_n[l]|^2 / var[l]                          reconstruction: sum of per-layer FVUs
  + sum_l lambda[l] * sum_i tanh(c * |W_dec[l]_i| * a[l]_i)       sparsity (jumprelu, relu)
  + lambda_P * sum_l sum_i relu(theta[l]_i - pre[l]_i) * |W_dec[l]_i|  pre-activation loss (jumprelu, relu)

lambda has one entry per layer, so that a target L0 can be steered layer by layer (trainer.py).
var[l] is the variance of y_n[l] measured once at initialisation, so every layer's error counts in
units of its own variance (an FVU) whatever its scale; a CLT's layers are weighted the same way.
|W_dec[l]_i| is the norm of feature i's whole decoder (for a CLT, all its output layers together),
as in Anthropic's CLT loss, so a feature cannot dodge the penalty by shrinking a and growing W_dec.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..transcoders.transcoder import Transcoders
from .config import TrainConfig
from .sparse import batchtopk, jumprelu, penalized_jumprelu, topk

SPARSE_DENSITY = 0.125  # decode sparsely when at most this share of the activations is non-zero


def _sparse_matmul(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """a @ w for a mostly-zero a (N, F) and w (F, D): each row is the sum of its active features' decoder
    rows, weighted by their activations (an embedding bag); gradients reach a's non-zeros and w."""
    tok, feat = a.detach().nonzero(as_tuple=True)  # row-major: tokens ascending
    offsets = torch.searchsorted(tok, torch.arange(a.shape[0], device=a.device))
    return nn.functional.embedding_bag(feat, w, offsets, mode="sum", per_sample_weights=a[tok, feat])


class StepStats(NamedTuple):  # a tuple, so DistributedDataParallel can walk it
    loss: torch.Tensor  # scalar, differentiable
    fvu: torch.Tensor  # (L,) reconstruction loss per layer (normalised by the init variance)
    l0: torch.Tensor  # (L,) mean active features per token
    fired: torch.Tensor  # (L, F) bool: feature active on some token of the batch


class TrainableTranscoders(nn.Module):
    def __init__(self, cfg: TrainConfig, n_layers: int, d_model: int):
        super().__init__()
        assert cfg.width is not None, "resolve the config against the model first"
        L, d, F = n_layers, d_model, cfg.width
        self.cfg, self.n_layers, self.d_model, self.width = cfg, L, d, F
        self.W_enc = nn.Parameter(torch.zeros(L, F, d))
        self.b_enc = nn.Parameter(torch.zeros(L, F))
        self.log_threshold = nn.Parameter(torch.zeros(L, F)) if cfg.activation == "jumprelu" else None
        if cfg.kind == "plt":
            self.W_dec = nn.Parameter(torch.zeros(L, F, d))
        else:  # W_dec[l] (F, L - l, d): feature of layer l writes to layers l .. L-1
            self.W_dec = nn.ParameterList([nn.Parameter(torch.zeros(F, L - l, d)) for l in range(L)])
        self.b_dec = nn.Parameter(torch.zeros(L, d))
        self.W_skip = nn.Parameter(torch.zeros(L, d, d)) if cfg.skip else None
        self.register_buffer("in_scale", torch.ones(L))
        self.register_buffer("out_scale", torch.ones(L))
        self.register_buffer("out_var", torch.ones(L))

    # --- pieces ------------------------------------------------------------------------
    def theta(self) -> torch.Tensor:
        """Per-feature thresholds (L, F) of the pre-activation loss (0 for non-JumpReLU)."""
        if self.log_threshold is None:
            return torch.zeros_like(self.b_enc)
        return self.log_threshold.exp()

    def decoder_norms(self) -> torch.Tensor:
        """|W_dec| per feature (L, F), over all of its output layers."""
        if self.cfg.kind == "plt":
            return self.W_dec.norm(dim=-1)
        return torch.stack([w.flatten(1).norm(dim=1) for w in self.W_dec])

    def encode(self, x_n: torch.Tensor) -> torch.Tensor:
        """Pre-activations (L, N, F) of normalised inputs (L, N, d)."""
        return torch.baddbmm(self.b_enc[:, None, :], x_n, self.W_enc.transpose(1, 2))

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        act, k = self.cfg.activation, self.cfg.k
        if act == "jumprelu":
            return jumprelu(pre, self.theta()[:, None, :], self.cfg.bandwidth)
        if act == "relu":
            return pre.clamp_min(0)
        if act == "topk":
            return topk(pre, k)
        return batchtopk(pre, k)

    def decode(self, a: torch.Tensor, x_n: torch.Tensor) -> torch.Tensor:
        """Normalised reconstructions (L, N, d) from activations (L, N, F)."""
        L, N, _ = a.shape
        # With k of F features on per token, a @ W_dec costs F / k times what the active features need; a
        # CLT's decoders (to every later layer) are most of a step, so sparse activations decode sparsely.
        mm = _sparse_matmul if a.count_nonzero() <= SPARSE_DENSITY * a.numel() else torch.matmul
        layers = a.unbind(0)  # one backward for all layers (indexing a[l] would zero-fill (L, N, F) per layer)
        if self.cfg.kind == "plt":
            y = torch.stack([self.b_dec[l] + mm(layers[l], self.W_dec[l]) for l in range(L)])
        else:
            terms: list[list[torch.Tensor]] = [[self.b_dec[t][None, :]] for t in range(L)]
            for l in range(L):
                out = mm(layers[l], self.W_dec[l].flatten(1)).view(N, L - l, self.d_model)  # to layers l..L-1
                for j in range(L - l):
                    terms[l + j].append(out[:, j])
            y = torch.stack([sum(ts[1:], ts[0]) for ts in terms])
        if self.W_skip is not None:
            y = y + torch.bmm(x_n, self.W_skip.transpose(1, 2))
        return y

    # --- training step -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, n_tokens: float | None = None) -> StepStats:
        """Loss of raw inputs / outputs (L, N, d) with sparsity coefficients lam (L,).

        Token sums are divided by n_tokens [N]: data-parallel runs pass (global tokens) / (processes),
        so that DDP's average of the per-process gradients is the gradient of the global mean.
        """
        cfg = self.cfg
        x_n = x * self.in_scale[:, None, None]
        y_n = y * self.out_scale[:, None, None]
        n = float(n_tokens or x.shape[1])
        pre = self.encode(x_n)
        penalty = 0.0
        if cfg.activation in ("jumprelu", "relu"):
            jump = cfg.activation == "jumprelu"
            theta = self.theta()[:, None, :] if jump else torch.zeros_like(self.b_enc)[:, None, :]
            a, tanh_sum, gap_sum, active = penalized_jumprelu(
                pre, theta, self.decoder_norms()[:, None, :], cfg.tanh_scale, cfg.bandwidth, jump
            )
            penalty = ((lam * tanh_sum).sum() + cfg.pre_act_coefficient * gap_sum) / n
        else:
            a = self.activate(pre)
            active = a > 0
        err = (self.decode(a, x_n) - y_n).pow(2).sum((1, 2)) / n  # (L,)
        fvu = err / self.out_var
        return StepStats(fvu.sum() + penalty, fvu.detach(), active.count_nonzero(-1).float().mean(-1), active.any(1))

    # --- initialisation ----------------------------------------------------------------
    @torch.no_grad()
    def initialize(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> None:
        """Data-aware initialisation from a batch of raw inputs / outputs (L, N, d).

        Scales make E|x_n|^2 = E|y_n|^2 = d; b_dec = mean output; encoder rows are random unit
        vectors (pre-activations of std ~ 1); every decoder gets norm 0.1 in a random direction
        (split evenly over a CLT feature's output layers); for JumpReLU / ReLU, b_enc puts each
        feature's threshold at the (1 - init_firing) quantile of its pre-activations.
        """
        cfg = self.cfg
        N, d = x.shape[1:]
        g = torch.Generator().manual_seed(seed)
        self.in_scale.copy_((d / x.pow(2).sum(-1).mean(-1)).sqrt())
        self.out_scale.copy_((d / y.pow(2).sum(-1).mean(-1)).sqrt())
        x_n = x * self.in_scale[:, None, None]
        y_n = y * self.out_scale[:, None, None]
        self.out_var.copy_((y_n - y_n.mean(1, keepdim=True)).pow(2).sum(-1).mean(-1).clamp_min(1e-8))
        self.b_dec.copy_(y_n.mean(1))
        W = torch.randn(self.W_enc.shape, generator=g)
        self.W_enc.copy_(W / W.norm(dim=-1, keepdim=True))
        decoders = [self.W_dec] if cfg.kind == "plt" else list(self.W_dec)
        for w in decoders:
            D = torch.randn(w.shape, generator=g)
            if cfg.kind == "plt":  # (L, F, d)
                norms = D.norm(dim=-1, keepdim=True)
            else:  # (F, n_out, d)
                norms = D.flatten(1).norm(dim=1)[:, None, None]
            w.copy_(0.1 * D / norms)
        if self.log_threshold is not None:
            self.log_threshold.fill_(math.log(cfg.init_threshold))
        if cfg.activation in ("jumprelu", "relu"):
            pre = torch.bmm(x_n, self.W_enc.transpose(1, 2))  # (L, N, F)
            rank = min(N, max(1, round((1 - cfg.init_firing) * N)))
            cut = pre.kthvalue(rank, dim=1).values  # (L, F)
            self.b_enc.copy_(self.theta() - cut)

    # --- export ------------------------------------------------------------------------
    @torch.no_grad()
    def export(self, threshold: torch.Tensor | None = None, name: str = "transcoders", metadata=None) -> Transcoders:
        """The trained set in raw model units. `threshold` (L, F) turns a BatchTopK set into JumpReLU."""
        cfg, L = self.cfg, self.n_layers
        s_in, s_out = self.in_scale, self.out_scale
        W_dec = []
        for l in range(L):
            w = self.W_dec[l][:, None, :] if cfg.kind == "plt" else self.W_dec[l]  # (F, n_out, d)
            W_dec.append((w / s_out[l : l + w.shape[1], None]).clone())
        activation, thresholds, k = cfg.activation, None, None
        if cfg.activation == "jumprelu":
            thresholds = list(self.theta().clone())
        elif cfg.activation == "batchtopk":
            assert threshold is not None, "a BatchTopK set needs calibrated thresholds to be exported"
            activation, thresholds = "jumprelu", list(threshold.clone())
        elif cfg.activation == "topk":
            k = cfg.k
        return Transcoders(
            kind=cfg.kind,
            W_enc=[(self.W_enc[l] * s_in[l]).clone() for l in range(L)],
            b_enc=[self.b_enc[l].clone() for l in range(L)],
            W_dec=W_dec,
            b_dec=[(self.b_dec[l] / s_out[l]).clone() for l in range(L)],
            activation=activation,
            threshold=thresholds,
            k=k,
            W_skip=None if self.W_skip is None else [(self.W_skip[l] * s_in[l] / s_out[l]).clone() for l in range(L)],
            input_hook=cfg.input_hook,
            output_hook=cfg.output_hook,
            name=name,
            metadata=dict(metadata or {}),
        )
