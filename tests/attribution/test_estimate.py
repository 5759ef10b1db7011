"""The attribution estimator: exact graph sizes, refusals that name a fix that works, the estimate command."""

import dataclasses
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import torch

from circuit_atlas import ReplacementModel, attribute
from circuit_atlas.attribution.budget import AttributionTooLarge, available_bytes, memory_budget, over_budget, refusal
from circuit_atlas.attribution.config import AttributionConfig
from circuit_atlas.attribution.estimate import (
    GB,
    cone_sizes,
    estimate_attribution,
    estimate_shape,
    shape_from_config,
    shape_of_prompt,
)

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "The capital of the state containing Dallas is"


@cache
def toy() -> ReplacementModel:
    return ReplacementModel.from_pretrained("toyworld", "toyworld-clt")


def test_estimate_counts_the_graph_exactly():
    model = toy()
    for k, p in ((None, 1.0), (None, 0.95), (100, 1.0)):
        cfg = AttributionConfig(max_n_logits=3, desired_logit_prob=p, max_feature_nodes=k)
        est = estimate_attribution(model, PROMPT, cfg)
        with memory_budget(100):
            g = attribute(model, PROMPT, **cfg.attribute_kwargs(), progress=False)
        assert est.active_features == g.count("feature")
        assert est.sources == g.n_sources
        assert est.rows == g.n_rows  # the logit targets are counted from the same forward
        if k is None:  # every feature's row: the cone structure gives the CSR's nnz exactly
            assert est.edges_exact and est.n_edges == g.n_edges == g.csr.nnz
            assert est.edges_bytes == 8 * g.n_edges + 8 * (g.n_rows + 1)
        else:  # rows chosen by influence while attributing: the k largest cones bound them
            assert not est.edges_exact and g.n_edges <= est.n_edges
        assert est.dense_bytes == 4 * g.n_rows * g.n_sources
        assert est.peak_bytes >= est.edges_bytes and est.seconds > 0


def test_cone_sizes_are_the_rows_nnz():
    """Each feature row's stored edges are exactly its cone (features and errors below, up to its position)."""
    model = toy()
    g = attribute(model, PROMPT, max_n_logits=2, progress=False)
    shape = shape_of_prompt(model, model.tokenize(PROMPT), AttributionConfig(max_n_logits=2))
    cone = cone_sizes(shape)  # (L, T)
    nnz = g.csr.indptr[1:] - g.csr.indptr[:-1]  # (R,)
    rows = g.row_nodes
    is_feature = g.kind[rows] == 0
    expected = cone[g.layer[rows[is_feature]], g.position[rows[is_feature]]]
    assert torch.equal(nnz[is_feature], expected)
    assert torch.equal(torch.tensor(shape.counts).sum(), torch.tensor(g.count("feature")))


def test_over_budget_is_refused_with_a_fix_that_fits():
    model = toy()
    full = estimate_attribution(model, PROMPT)
    half = estimate_attribution(model, PROMPT, AttributionConfig(max_feature_nodes=full.active_features // 2))
    budget_gb = (half.peak_bytes + full.peak_bytes) / 2 / GB
    with memory_budget(budget_gb), pytest.raises(AttributionTooLarge) as err:
        attribute(model, PROMPT, progress=False)
    message = str(err.value)
    assert "--max-feature-nodes" in message and "shorten the prompt" in message and "--memory-budget-gb" in message
    assert "--edge-dir" in message
    k = int(message.split("--max-feature-nodes ")[1].split()[0])
    assert 0 < k < full.active_features
    with memory_budget(budget_gb):
        g = attribute(model, PROMPT, max_feature_nodes=k, progress=False)  # the suggested setting runs
    assert g.n_rows == k + g.count("logit")


def test_on_an_accelerator_device_and_host_memory_are_checked_apart():
    """The context and a batch must fit the device's free memory; the edges the RAM budget; each alone."""
    model = toy()
    cfg = AttributionConfig()
    shape = shape_of_prompt(model, model.tokenize(PROMPT), cfg)
    est = estimate_shape(shape, cfg, 1e11)
    assert 0 < est.device_bytes < est.peak_bytes and 0 < est.host_bytes < est.peak_bytes
    total = est.peak_bytes
    roomy = 2 * total / 0.8
    assert over_budget(shape, est, cfg, 1e11, total, None) is None  # CPU: the sum against the RAM budget
    assert over_budget(shape, est, cfg, 1e11, 0.99 * total, None) is not None
    # on a device, the same total budget in RAM is plenty once the device holds its part
    assert over_budget(shape, est, cfg, 1e11, 0.99 * total, roomy, "cuda:0") is None
    small_device = 0.9 * est.device_bytes / 0.8
    message = over_budget(shape, est, cfg, 1e11, 10 * total, small_device, "cuda:0")
    assert message and "on cuda:0" in message and "--batch-size" in message and "free there" in message
    message = over_budget(shape, est, cfg, 1e11, 0.9 * est.host_bytes, roomy, "cuda:0")
    assert message and "--memory-budget-gb" in message and "on cuda:0" not in message


def _old_dense_peak_lower_bound(est) -> float:
    """The dense engine's estimate was at least EDGE_COPIES (3.5) times the rows x sources float32 matrix."""
    return 3.5 * est.dense_bytes


def test_graphs_the_dense_estimate_refused_now_fit():
    """A long prompt: the old dense estimate exceeds the budget, the sparse one fits, attribution runs."""
    model = toy()
    special = set(model.tokenizer.all_special_ids)
    words = [i for i in torch.randint(0, model.vocab_size, (200,), generator=torch.Generator().manual_seed(0)).tolist()
             if i not in special]  # fmt: skip
    ids = torch.tensor([model.bos_id(), *words[:59]])  # 60 tokens, near the toy model's context of 64
    est = estimate_attribution(model, ids, AttributionConfig(max_n_logits=3))
    assert est.peak_bytes < _old_dense_peak_lower_bound(est)  # the premise: sparse needs less
    budget_gb = (est.peak_bytes + _old_dense_peak_lower_bound(est)) / 2 / GB
    os.environ["CIRCUIT_ATLAS_MEMORY_BUDGET_GB"] = str(budget_gb)
    try:
        g = attribute(model, ids, max_n_logits=3, progress=False)  # accepted under the environment's budget
        assert g.n_edges == est.n_edges
        with pytest.raises(AttributionTooLarge) as err:  # a budget below the sparse estimate: still refused
            with memory_budget(0.9 * est.peak_bytes / GB):
                attribute(model, ids, max_n_logits=3, progress=False)
    finally:
        del os.environ["CIRCUIT_ATLAS_MEMORY_BUDGET_GB"]
    message = str(err.value)
    k = int(message.split("--max-feature-nodes ")[1].split()[0])
    assert 0 < k < est.active_features
    with memory_budget(0.9 * est.peak_bytes / GB):
        assert attribute(model, ids, max_n_logits=3, max_feature_nodes=k, progress=False).n_rows == k + 3


def test_edge_dir_moves_the_edges_out_of_the_budget(tmp_path):
    model = toy()
    in_ram = estimate_attribution(model, PROMPT)
    on_disk = estimate_attribution(model, PROMPT, AttributionConfig(edge_dir=str(tmp_path)))
    assert on_disk.n_edges == in_ram.n_edges and on_disk.disk_bytes == in_ram.edges_bytes
    assert on_disk.peak_bytes == pytest.approx(in_ram.peak_bytes - in_ram.edges_bytes)
    with pytest.raises(ValueError, match="edge_budget must be None"):
        AttributionConfig(edge_budget=2.0)


def test_estimate_from_config_matches_the_loaded_model():
    """From config.json + width + L0 alone, the same shapes as the loaded model (no weights read)."""
    model = toy()
    ids = model.tokenize(PROMPT)
    cfg = AttributionConfig(max_n_logits=3, desired_logit_prob=1.0)
    loaded = shape_of_prompt(model, ids, cfg)
    hf = json.loads((ROOT / "circuit_atlas/zoo/toyworld/model/config.json").read_text())
    width = model.transcoders.W_enc[0].shape[0]
    l0 = sum(map(sum, loaded.counts)) / (model.n_layers * (len(ids) - 1))
    from_config = shape_from_config(hf, width, l0, len(ids), kind="clt", skip=True, n_logits=3)
    for field in ("n_layers", "d_model", "n_heads", "element", "n_out", "n_logits"):
        assert getattr(from_config, field) == getattr(loaded, field), field
    assert from_config.weight_bytes == pytest.approx(loaded.weight_bytes, rel=0.02)
    uniform = dataclasses.replace(loaded, counts=from_config.counts, weight_bytes=from_config.weight_bytes)
    assert estimate_shape(from_config, cfg, 1e10) == estimate_shape(uniform, cfg, 1e10)
    with pytest.raises(ValueError, match="lacks num_hidden_layers"):
        shape_from_config({"hidden_size": 8}, 16, 2, 10)


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


GEMMA_2_2B = {  # the shapes of google/gemma-2-2b's config.json
    "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216,
    "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
    "vocab_size": 256000, "tie_word_embeddings": True, "torch_dtype": "float32",
}  # fmt: skip


def test_estimate_command_from_a_config_alone(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(GEMMA_2_2B))
    r = _cli("estimate", "--config", str(path), "--width", "16384", "--l0", "80", "--tokens", "64",
             "--max-feature-nodes", "512", "--memory-budget-gb", "1000")  # fmt: skip
    assert r.returncode == 0, r.stderr
    A = 26 * 63 * 80
    assert f"{A:,} active features" in r.stdout and "fits" in r.stdout and f"{512 + 10:,} rows" in r.stdout
    r = _cli("estimate", "--config", str(path), "--width", "16384", "--l0", "80", "--tokens", "4000",
             "--max-feature-nodes", "8192")  # fmt: skip
    assert r.returncode == 1 and "would be refused" in r.stdout
    r = _cli("estimate", "--config", str(path), "--tokens", "64")
    assert r.returncode != 0 and "--width" in r.stderr and "Traceback" not in r.stderr
    r = _cli("estimate", "--tokens", "64")
    assert r.returncode != 0 and "--model and --transcoders" in r.stderr and "Traceback" not in r.stderr


def test_budgeted_rows_keep_at_most_one_over_the_budget_and_the_estimate_bounds_them():
    """Under edge_budget f a kept entry holds >= f of its row's mass, so a row keeps <= 1/f: a bound, no assumption."""
    model = toy()
    f = 0.02
    exact = estimate_attribution(model, PROMPT)
    est = estimate_attribution(model, PROMPT, AttributionConfig(edge_budget=f))
    with memory_budget(100):
        g = attribute(model, PROMPT, edge_budget=f, progress=False)
    shape = shape_of_prompt(model, model.tokenize(PROMPT), AttributionConfig())
    assert int(g.csr.row_counts().max()) <= int(1 / f) < int(cone_sizes(shape).max())  # the bound binds
    assert not est.edges_exact and g.n_edges <= est.n_edges < exact.n_edges
    assert est.peak_bytes < exact.peak_bytes
    assumed = estimate_shape(shape, AttributionConfig(edge_budget=f), 1e10, kept_fraction=0.1)
    assert assumed.n_edges <= est.n_edges and "assuming rows keep 0.1 of their cone" in assumed.describe()
    with pytest.raises(ValueError, match="give edge_budget too"):
        estimate_shape(shape, AttributionConfig(), 1e10, kept_fraction=0.1)
    with pytest.raises(ValueError, match=r"kept_fraction must be in \(0, 1\]"):
        estimate_shape(shape, AttributionConfig(edge_budget=f), 1e10, kept_fraction=0)


def test_gemma_2_2b_at_4000_tokens_fits_an_80_gb_accelerator_with_an_edge_budget():
    """The issue's case: 26 x 16k PLTs at L0 100, 8,192 feature rows. The feature context is O(A), the rows
    at most 1/edge_budget each: weights + device memory under 80 GB, the edges in host RAM."""
    shape = shape_from_config(GEMMA_2_2B, 16384, 100, 4000)
    cfg = AttributionConfig(max_feature_nodes=8192, edge_budget=1e-5, batch_size=64)
    est = estimate_shape(shape, cfg, 1e12)
    A, d = est.active_features, 2304
    assert A == 26 * 3999 * 100
    assert est.model_bytes + est.device_bytes < 80 * GB
    assert est.context_bytes < 30 * GB < 2 * A * d * 4  # vectors per feature alone would be 192 GB
    assert est.n_edges <= est.rows * 100_000 and est.host_bytes < 30 * GB
    exact = estimate_shape(shape, AttributionConfig(max_feature_nodes=8192), 1e12)
    assert exact.host_bytes > 1000 * GB  # without the budget the rows are dense over their cones (82 G edges)
    message = refusal(shape, exact, 80 * GB, AttributionConfig(max_feature_nodes=8192, batch_size=64), 1e12)
    assert "--edge-budget 1e-05" in message  # the refusal names the budget that fits
