"""The memory budget of an attribution, and the refusal that says how to fit it.

`check_attribution_budget` (called at the start of `attribute()`) estimates the graph (estimate.py) and
refuses with the fix when the estimate exceeds the budget: by default min(8 GB, 80 % of the RAM available
now); change it with `memory_budget(gb)` (a context manager) or CIRCUIT_ATLAS_MEMORY_BUDGET_GB. On an
accelerator the device's free memory and the host's RAM are checked apart (`over_budget`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os

from .config import DEFAULT_MEMORY_BUDGET_GB, AttributionConfig
from .estimate import GB, Estimate, Shape, _gb, _is_ids, estimate_shape, matmul_throughput, shape_of_prompt

AVAILABLE_FRACTION = 0.8
EDGE_BUDGETS = (1e-6, 1e-5, 1e-4, 1e-3)  # what a refusal may suggest, most exact first


class AttributionTooLarge(MemoryError):
    """The estimate exceeds the memory budget; the message says how to fit."""


_budget: contextvars.ContextVar[float | None] = contextvars.ContextVar("memory_budget_gb", default=None)


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


def suggest_max_feature_nodes(shape: Shape, config: AttributionConfig, budget: float, throughput: float) -> int | None:
    """The largest round max_feature_nodes whose estimate fits `budget` (None: not even 0 rows fit)."""

    def peak(k: int) -> float:
        return estimate_shape(shape, dataclasses.replace(config, max_feature_nodes=k), throughput).peak_bytes

    if peak(0) > budget:
        return None
    lo, hi = 0, sum(map(sum, shape.counts))  # peak(lo) fits; find the largest k that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if peak(mid) <= budget else (lo, mid - 1)
    unit = 10 ** max(0, len(str(lo)) - 2)
    return lo // unit * unit  # rounded down to two significant digits: a number to type


def refusal(shape: Shape, est: Estimate, budget: float, config: AttributionConfig, throughput: float) -> str:
    """The error text when `est` exceeds `budget`: what, why, and the fixes with numbers."""
    k = suggest_max_feature_nodes(shape, config, budget, throughput)
    rows = f"compute rows for fewer features with --max-feature-nodes {k} (max_feature_nodes={k}), or " if k else ""
    thin = ""
    if config.edge_budget is None:  # the most exact budget that fits, if one does
        for f in EDGE_BUDGETS:
            if estimate_shape(shape, dataclasses.replace(config, edge_budget=f), throughput).peak_bytes <= budget:
                thin = (
                    f"thin each row with --edge-budget {f:g} (edge_budget={f:g}: at most {int(1 / f):,} edges a row); "
                )
                break
    disk = "" if config.edge_dir else "keep the edges on disk with --edge-dir DIR (edge_dir=DIR); "
    return (
        f"this attribution would need about {_gb(est.peak_bytes)} of memory, more than its budget of "
        f"{_gb(budget)} ({est.describe()}). To fit, {rows}shorten the prompt; {thin}{disk}or raise the budget with "
        "--memory-budget-gb GB (memory_budget(gb) in Python, or CIRCUIT_ATLAS_MEMORY_BUDGET_GB) if the machine "
        "really has the memory"
    )


_last: list = []  # [key, Shape] of the latest check


def check_attribution_budget(model, prompt, **settings) -> Estimate:
    """Validate the settings (AttributionConfig), estimate, and refuse with the fix if over budget."""
    config = AttributionConfig(**{k: v for k, v in settings.items() if k != "progress"})
    ids = prompt if _is_ids(prompt) else model.tokenize(prompt)
    budget = budget_bytes(config.memory_budget_gb)
    key = (id(model), tuple(ids.tolist()), config.max_n_logits, config.desired_logit_prob)
    if _last and _last[0] == key:  # the CLI checks before attribute() checks again: one forward, not two
        shape = _last[1]
    else:
        shape = shape_of_prompt(model, ids, config)
        _last[:] = [key, shape]
    throughput = matmul_throughput(model.device)
    est = estimate_shape(shape, config, throughput)
    message = over_budget(shape, est, config, throughput, budget, device_free_bytes(model.device), model.device)
    if message:
        raise AttributionTooLarge(message)
    return est


def device_free_bytes(device) -> float | None:
    """Free memory on an accelerator (torch.cuda.mem_get_info), None for the CPU, whose RAM is the budget."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    return float(torch.cuda.mem_get_info(device)[0])


def over_budget(shape: Shape, est: Estimate, config: AttributionConfig, throughput: float, budget: float,
                device_free: float | None, device="cpu") -> str | None:  # fmt: skip
    """The refusal, or None if the attribution fits.

    On the CPU everything shares the RAM budget. On an accelerator the context and one batch of rows must
    fit AVAILABLE_FRACTION of the device's free memory (the loaded weights are already counted there) and
    the edges with their post-processing the RAM budget, each checked on its own: a run that fits in
    total can still overflow the device, and the other way round.
    """
    if device_free is None:
        return refusal(shape, est, budget, config, throughput) if est.peak_bytes > budget else None
    room = AVAILABLE_FRACTION * device_free
    if est.device_bytes > room:
        return (
            f"this attribution would need about {_gb(est.device_bytes)} on {device} (the clean run's patterns and "
            f"activations, the attribution context and one batch of rows), more than the {_gb(room)} free there "
            f"({est.describe()}). To fit, lower the batch size with --batch-size B (batch_size=B; now "
            f"{config.batch_size}) or shorten the prompt; the edges stay in host RAM either way"
        )
    if est.host_bytes > budget:
        return refusal(shape, dataclasses.replace(est, peak_bytes=est.host_bytes), budget, config, throughput)
    return None
