"""The oracle matrix on a GPU: tests/attribution/test_oracle.py's engine tests, with the engine model
on CUDA (the oracle stays float64 on the CPU).

Marked `gpu`: tests/conftest.py deselects them where torch.cuda.is_available() is false (set
CIRCUIT_ATLAS_GPU_DEVICE=cpu to run them anyway, to check this file). scripts/gpu_check.sh runs
them with a short bench on a machine with a GPU.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu
DEVICE = os.environ.get("CIRCUIT_ATLAS_GPU_DEVICE", "cuda")


def _load_oracle_cases():
    """A private instance of test_oracle.py whose engine_case builds the model on DEVICE."""
    path = Path(__file__).resolve().parents[1] / "attribution" / "test_oracle.py"
    spec = importlib.util.spec_from_file_location("_oracle_cases_on_device", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


oc = _load_oracle_cases()


@functools.cache
def engine_case_on_device(case):
    """As test_oracle.engine_case, with the engine model (weights, transcoders, run) on DEVICE."""
    from circuit_atlas import ReplacementModel, attribute

    hf, om = oc.pristine(case[0])
    tc = oc.transcoders_for(case)
    model = ReplacementModel(copy.deepcopy(hf), oc.tokenizer(), copy.deepcopy(tc), dtype=torch.float32, device=DEVICE)
    graph = attribute(model, oc.PROMPT, max_n_logits=oc.MAX_N_LOGITS, desired_logit_prob=oc.DESIRED_PROB,
                      progress=False)  # fmt: skip
    ids = graph.input_ids.cpu()
    oracle = oc.oracle_adjacency(hf, tc, ids, [int(t) for t in graph.logit_token_ids], oracle=om)
    return {"model": model, "graph": graph, "oracle": oracle, "tc": tc, "hf": hf, "om": om,
                "t_engine": float("nan"), "t_oracle": float("nan")}  # fmt: skip


oc.engine_case = engine_case_on_device  # the oracle tests below look it up at call time


def _on_device(t: torch.Tensor) -> bool:
    return t.device.type == torch.device(DEVICE).type


@pytest.mark.parametrize("case", oc.MAIN_CASES[:4] + oc.EXTRA_CASES[:2], ids=oc.case_id)
def test_every_tensor_on_the_device(case):
    model = engine_case_on_device(case)["model"]
    w = model.weights
    tensors = [w.embed, w.W_U, w.final_norm.gain, *model.transcoders.W_enc, *model.transcoders.W_dec]
    for b in w.blocks:
        tensors += [b.attn.W_Q, b.attn.W_O, b.ln1.gain, b.ln2.gain, *b.mlp.tensors()]
    assert all(_on_device(t) for t in tensors)
    run = model.run(model.tokenize(oc.PROMPT))
    assert all(_on_device(t) for t in (run.embeddings, run.feature_inputs, run.mlp_outputs, run.logits, *run.patterns))
    gen = model.generate(oc.PROMPT, max_new_tokens=3)
    assert _on_device(gen.logits) and _on_device(gen.new_ids)
    result = model.intervene(oc.PROMPT, mode="constrained")
    assert _on_device(result.logits)


@pytest.mark.parametrize("case", oc.ALL_CASES, ids=oc.case_id)
def test_graph_matches_oracle(case):
    oc.test_graph_matches_oracle(case)


@pytest.mark.parametrize("case", oc.MAIN_CASES, ids=oc.case_id)
def test_interventions_match_the_cpu_engine(case):
    """Clean logits, a constrained intervention and a greedy generation agree with the CPU engine."""
    from circuit_atlas import ReplacementModel
    from circuit_atlas.interventions import Intervention

    model = engine_case_on_device(case)["model"]
    hf, _ = oc.pristine(case[0])
    cpu = ReplacementModel(copy.deepcopy(hf), oc.tokenizer(), copy.deepcopy(oc.transcoders_for(case)))
    torch.testing.assert_close(model.logits(oc.PROMPT).cpu(), cpu.logits(oc.PROMPT), rtol=1e-4, atol=1e-4)
    (feature, _value), *_ = cpu.activations(oc.PROMPT).active()
    edit = [Intervention(feature, value=0.0)]
    for mode in ("free", "constrained"):
        got = model.intervene(oc.PROMPT, edit, mode=mode).logits.cpu()
        torch.testing.assert_close(got, cpu.intervene(oc.PROMPT, edit, mode=mode).logits, rtol=1e-4, atol=1e-4)
    assert model.generate(oc.PROMPT, max_new_tokens=4).text == cpu.generate(oc.PROMPT, max_new_tokens=4).text
