"""The attribution estimator: exact graph sizes, refusals that name a fix that works, the estimate command."""

import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.attribution.config import AttributionConfig
from circuit_atlas.attribution.estimate import (
    GB,
    AttributionTooLarge,
    available_bytes,
    estimate_attribution,
    memory_budget,
)

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "The capital of the state containing Dallas is"


@cache
def toy() -> ReplacementModel:
    return ReplacementModel.from_pretrained("toyworld", "toyworld-clt")


def test_estimate_counts_the_graph_exactly():
    model = toy()
    for k in (None, 100):
        est = estimate_attribution(model, PROMPT, AttributionConfig(max_n_logits=3, desired_logit_prob=1.0,
                                                                    max_feature_nodes=k))  # fmt: skip
        with memory_budget(100):
            g = attribute(model, PROMPT, max_n_logits=3, desired_logit_prob=1.0, max_feature_nodes=k, progress=False)
        assert est.active_features == g.count("feature")
        assert est.sources == g.edges.shape[1]
        assert est.rows == g.edges.shape[0]  # 3 logits: desired_logit_prob 1.0 takes all max_n_logits
        assert est.edges_bytes == 4 * g.edges.numel()
        assert est.peak_bytes >= est.edges_bytes and est.seconds > 0


def test_over_budget_is_refused_with_a_fix_that_fits():
    model = toy()
    full = estimate_attribution(model, PROMPT)
    half = estimate_attribution(model, PROMPT, AttributionConfig(max_feature_nodes=full.active_features // 2))
    budget_gb = (half.peak_bytes + full.peak_bytes) / 2 / GB
    with memory_budget(budget_gb), pytest.raises(AttributionTooLarge) as err:
        attribute(model, PROMPT, progress=False)
    message = str(err.value)
    assert "--max-feature-nodes" in message and "shorten the prompt" in message and "--memory-budget-gb" in message
    k = int(message.split("--max-feature-nodes ")[1].split()[0])
    assert 0 < k < full.active_features
    with memory_budget(budget_gb):
        g = attribute(model, PROMPT, max_feature_nodes=k, progress=False)  # the suggested setting runs
    assert g.edges.shape[0] == k + g.count("logit")


def test_default_budget_and_available_memory():
    avail = available_bytes()
    meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in open("/proc/meminfo")}
    assert abs(avail - meminfo["MemAvailable"]) < 0.2 * meminfo["MemTotal"]
    with pytest.raises(ValueError, match="memory budget must be > 0"), memory_budget(0):
        pass


def test_bad_settings_are_one_clear_error_each():
    cases = [
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(max_feature_nodes=-1), "max_feature_nodes must be an integer >= 0"),
        (dict(max_n_logits=0), "max_n_logits must be an integer >= 1"),
        (dict(desired_logit_prob=1.5), r"desired_logit_prob must be in \(0, 1\]"),
        (dict(update_interval=0), "update_interval must be an integer >= 1"),
        (dict(memory_budget_gb=-2.0), "memory_budget_gb must be > 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            AttributionConfig(**kwargs)
    with pytest.raises(ValueError, match="update_interval must be an integer >= 1"):
        attribute(toy(), PROMPT, update_interval=0)  # attribute() validates through AttributionConfig


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "circuit_atlas", *args], capture_output=True, text=True, cwd=ROOT)


def test_estimate_command_and_trace_refusal(tmp_path):
    r = _cli("estimate", "--model", "toyworld", "--transcoders", "toyworld-clt", "--tokens", "40")
    assert r.returncode == 0, r.stderr
    assert "40 tokens" in r.stdout and "active features" in r.stdout and "fits" in r.stdout
    r = _cli("estimate", "--model", "toyworld", "--transcoders", "toyworld-clt", "--tokens", "40",
             "--memory-budget-gb", "0.06")  # fmt: skip
    assert r.returncode == 1 and "would be refused" in r.stdout and "--max-feature-nodes" in r.stdout
    r = _cli("trace", "--model", "toyworld", "--transcoders", "toyworld-clt", "--prompt", PROMPT,
             "--out", str(tmp_path / "g.safetensors"), "--memory-budget-gb", "0.001")  # fmt: skip
    assert r.returncode == 2 and "circuit-atlas: error: this attribution would need" in r.stderr
    assert not (tmp_path / "g.safetensors").exists()
