"""How much memory and time an attribution graph will take, before computing it.

The graph's edges are one float32 matrix (rows, sources):

    sources S = A + L*(T-1) + T          active features, error nodes, token embeddings
    rows    R = min(max_feature_nodes, A) + K    computed feature rows + logit targets
    edges   = 4 * R * S bytes

A (active features) is counted exactly from one clean forward on the prompt (cheap next to the
attribution). Peak memory is the edges times EDGE_COPIES (the matrix itself, the float32 copies
that pruning and scoring make of it, the writer's contiguous copy) plus one backward batch
(cotangents and the rows it reads out) and the context (decoder rows of every active feature).
Time is the work of the transposed passes at a throughput measured by a short matmul probe, plus
pruning, scoring and saving in proportion to the edges. EDGE_COPIES, ROW_EFFICIENCY and
POST_SECONDS_PER_GB are measured by bench/estimate.py (see its output for the fit).

`check_attribution_budget` (called at the start of `attribute()`) refuses with the fix when the
estimate exceeds the budget: by default min(8 GB, 80 % of the RAM available now); change it with
`memory_budget(gb)` (a context manager) or CIRCUIT_ATLAS_MEMORY_BUDGET_GB.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import time
from dataclasses import dataclass

from .config import DEFAULT_MEMORY_BUDGET_GB, AttributionConfig

GB = 1e9
EDGE_COPIES = 3.5  # edges + pruning's and scoring's normalised copies + the writer's copy (bench/estimate.py)
ROW_EFFICIENCY = 0.25  # fraction of the probe's matmul throughput the row batches reach (bench/estimate.py)
POST_SECONDS_PER_GB = 6.0  # pruning, scores and saving, per GB of edges (bench/estimate.py)
AVAILABLE_FRACTION = 0.8


class AttributionTooLarge(MemoryError):
    """The estimate exceeds the memory budget; the message says how to fit."""


_budget: contextvars.ContextVar[float | None] = contextvars.ContextVar("memory_budget_gb", default=None)


@dataclass
class Estimate:
    tokens: int  # T, BOS included
    active_features: int  # A
    sources: int  # S
    rows: int  # R (feature rows + logit targets)
    edges_bytes: float
    peak_bytes: float  # beyond what the loaded model already uses
    seconds: float
    model_bytes: float  # model + transcoder weights (already in memory when attributing)

    def describe(self) -> str:
        return (
            f"{self.tokens} tokens, {self.active_features:,} active features, {self.rows:,} rows x "
            f"{self.sources:,} sources: edges {_gb(self.edges_bytes)}, peak about "
            f"{_gb(self.peak_bytes)} beyond the loaded model ({_gb(self.model_bytes)}), "
            f"about {_seconds(self.seconds)}"
        )


def _gb(n: float) -> str:
    return f"{n / GB:.3g} GB"


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


def available_bytes() -> float:
    """RAM available to a new allocation now: MemAvailable from /proc/meminfo, else free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def default_budget_bytes() -> float:
    env = os.environ.get("CIRCUIT_ATLAS_MEMORY_BUDGET_GB")
    if env:
        try:
            return float(env) * GB
        except ValueError:
            raise ValueError(f"CIRCUIT_ATLAS_MEMORY_BUDGET_GB must be a number of GB, got {env!r}") from None
    return min(DEFAULT_MEMORY_BUDGET_GB * GB, AVAILABLE_FRACTION * available_bytes())


def budget_bytes(memory_budget_gb: float | None = None) -> float:
    """The budget in force: the argument, else `memory_budget(...)`, else the default."""
    gb = memory_budget_gb if memory_budget_gb is not None else _budget.get()
    return gb * GB if gb is not None else default_budget_bytes()


@contextlib.contextmanager
def memory_budget(gb: float | None):
    """`with memory_budget(32): attribute(...)` lets attribution use up to 32 GB (None: the default)."""
    if gb is not None and not gb > 0:
        raise ValueError(f"the memory budget must be > 0 GB, got {gb!r}")
    token = _budget.set(gb)
    try:
        yield
    finally:
        _budget.reset(token)


_throughput: list[float] = []


def matmul_throughput(device=None) -> float:
    """Float32 matmul FLOP/s of this device, from a ~50 ms probe (measured once per process)."""
    import torch

    if _throughput:
        return _throughput[0]
    a = torch.randn(256, 512, device=device)
    b = torch.randn(512, 512, device=device)
    (a @ b).sum().item()  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.05:
        (a @ b).sum().item()
        n += 1
    flops = n * 2 * 256 * 512 * 512 / (time.perf_counter() - start)
    _throughput.append(flops)
    return flops


def count_active_features(model, input_ids) -> int:
    """Active (feature, position >= 1) pairs of the prompt: the feature nodes of its graph."""
    import torch

    from .context import ZERO_POSITIONS

    with torch.no_grad():
        run = model.run(input_ids)
        tc = model.transcoders
        return sum(
            int((tc.activate(l, tc.encode(l, run.feature_inputs[l][ZERO_POSITIONS:])) != 0).sum())
            for l in range(model.n_layers)
        )


def _weight_bytes(model) -> float:
    tc = model.transcoders
    tensors = [*tc.W_enc, *tc.W_dec, *tc.b_enc, *tc.b_dec, *(tc.W_skip or [])]
    size = sum(t.numel() * t.element_size() for t in tensors)
    size += sum(p.numel() * p.element_size() for p in model.hf_model.parameters())
    return float(size)


def estimate_for(model, n_tokens: int, n_active: int, config: AttributionConfig) -> Estimate:
    """The estimate for a prompt of n_tokens (BOS included) with n_active active features."""
    L, d, T = model.n_layers, model.d_model, n_tokens
    K = config.max_n_logits
    A = n_active
    S = A + L * (T - 1) + T
    n_feature_rows = A if config.max_feature_nodes is None else min(config.max_feature_nodes, A)
    R = n_feature_rows + K
    edges = 4.0 * R * S
    element = _element_size(model)
    batch = min(config.batch_size, R)
    # One batch: cotangents (B, T, d) per layer alive at once, and its rows (B, S) twice (dtype + float32).
    per_batch = batch * (T * d * element * 2 + S * (element + 4))
    # Context: encoder and decoder rows of every active feature (CLT: up to L decoder rows), errors, patterns.
    n_out = sum(model.transcoders.W_dec[l].shape[1] for l in range(L)) / L
    context = A * d * element * (1 + n_out) + L * T * d * element * 4
    context += L * model.weights.blocks[0].attn.n_heads * T * T * element
    peak = EDGE_COPIES * edges + per_batch + context
    # Work per row: the transposed pass (about 6 d^2 per position and layer, half the layers and
    # positions on average by causality) and reading the cotangent against every source (2 S d).
    flops = R * (L * T * 6 * d * d / 2 + 2 * S * d)
    seconds = flops / (ROW_EFFICIENCY * matmul_throughput(model.device)) + POST_SECONDS_PER_GB * edges / GB
    return Estimate(T, A, S, R, edges, peak, seconds, _weight_bytes(model))


def _element_size(model) -> int:
    import torch

    return torch.empty(0, dtype=model.dtype).element_size()


def estimate_attribution(model, prompt, config: AttributionConfig | None = None) -> Estimate:
    """Estimate for attributing `prompt` (text or ids): one clean forward counts its active features."""
    config = config or AttributionConfig()
    ids = model.tokenize(prompt) if not _is_ids(prompt) else prompt
    return estimate_for(model, int(ids.shape[0]), count_active_features(model, ids), config)


def _is_ids(prompt) -> bool:
    import torch

    return isinstance(prompt, torch.Tensor) and prompt.dtype == torch.long


def suggest_max_feature_nodes(model, est: Estimate, config: AttributionConfig, budget: float) -> int | None:
    """The largest round max_feature_nodes whose estimate fits `budget` (None: not even 0 rows fit)."""

    def peak(k: int) -> float:
        return estimate_for(
            model, est.tokens, est.active_features, dataclasses.replace(config, max_feature_nodes=k)
        ).peak_bytes

    if peak(0) > budget:
        return None
    lo, hi = 0, est.active_features  # peak(lo) fits; find the largest k that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if peak(mid) <= budget else (lo, mid - 1)
    unit = 10 ** max(0, len(str(lo)) - 2)
    return lo // unit * unit  # rounded down to two significant digits: a number to type


def refusal(model, est: Estimate, budget: float, config: AttributionConfig) -> str:
    """The error text when `est` exceeds `budget`: what, why, and the fixes with numbers."""
    k = suggest_max_feature_nodes(model, est, config, budget)
    rows = f"compute rows for fewer features with --max-feature-nodes {k} (max_feature_nodes={k}), or " if k else ""
    return (
        f"this attribution would need about {_gb(est.peak_bytes)} of memory, more than its budget of "
        f"{_gb(budget)} ({est.describe()}). To fit, {rows}shorten the prompt; or raise the budget with "
        "--memory-budget-gb GB (memory_budget(gb) in Python, or CIRCUIT_ATLAS_MEMORY_BUDGET_GB) if the machine "
        "really has the memory"
    )


_last: list = []  # [key, Estimate] of the latest check


def check_attribution_budget(model, prompt, **settings) -> Estimate:
    """Validate the settings (AttributionConfig), estimate, and refuse with the fix if over budget."""
    config = AttributionConfig(**{k: v for k, v in settings.items() if k != "progress"})
    ids = prompt if _is_ids(prompt) else model.tokenize(prompt)
    budget = budget_bytes(config.memory_budget_gb)
    key = (id(model), tuple(ids.tolist()), config)
    if _last and _last[0] == key:  # the CLI checks before attribute() checks again: one forward, not two
        est = _last[1]
    else:
        est = estimate_attribution(model, ids, config)
        _last[:] = [key, est]
    if est.peak_bytes > budget:
        raise AttributionTooLarge(refusal(model, est, budget, config))
    return est
