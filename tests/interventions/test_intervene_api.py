"""What a user of `intervene` sees: the default mode and which mode ran, token strings, inactive features."""

from __future__ import annotations

import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path

import pytest
import torch

from circuit_atlas import ReplacementModel
from circuit_atlas.interventions import Feature, Supernode, scale_by

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "The capital of the state containing Dallas is"
SAY_AUSTIN = Supernode("say Austin", [Feature(0, 8, 67), Feature(0, 9, 67), Feature(0, 9, 917), Feature(0, 10, 917),
                                      Feature(1, 10, 931), Feature(2, 10, 860)])  # fmt: skip


@cache
def toy() -> ReplacementModel:
    return ReplacementModel.from_pretrained("toyworld", "toyworld-clt")


def test_default_mode_is_frozen_attention_and_the_result_says_so():
    model = toy()
    steer = [scale_by(SAY_AUSTIN, -2.0)]
    default = model.intervene(PROMPT, steer)
    frozen = model.intervene(PROMPT, steer, mode="frozen_attention")
    free = model.intervene(PROMPT, steer, mode="free")
    assert default.mode == "frozen_attention" and free.mode == "free"
    torch.testing.assert_close(default.logits, frozen.logits, rtol=0, atol=0)
    assert not torch.allclose(default.logits, free.logits)  # the default is not (silently) free
    assert "mode='frozen_attention'" in repr(default)
    assert model.generate(PROMPT, steer, max_new_tokens=1).mode == "frozen_attention"


def test_top_tokens_are_strings():
    result = toy().intervene(PROMPT, [])
    top = result.probabilities().topk(3)
    assert top[0].token == " Austin" and isinstance(top[0].token, str)
    assert top[0].probability > 0.9 and top[0].id == toy().tokenizer.convert_tokens_to_ids("ĠAustin")
    assert repr(top[0]).startswith("' Austin' 0.9")
    probs = result.probabilities()
    assert probs[" Austin"] == pytest.approx(top[0].probability) == probs[top[0].id]
    assert probs.tensor.shape == (toy().vocab_size,) and float(probs.tensor.sum()) == pytest.approx(1.0)


def _inactive_feature(model, layer: int, position: int) -> int:
    acts = model.activations(PROMPT).dense(layer)[position]
    return int((acts == 0).nonzero()[0])


def test_scaling_an_inactive_feature_says_it_does_nothing():
    model = toy()
    idle = _inactive_feature(model, 1, -1)
    with pytest.warns(UserWarning, match=f"feature {idle} of layer 1 is not active"):
        result = model.intervene(PROMPT, [scale_by((1, idle), 5.0, position=-1)])
    assert len(result.notes) == 1 and "set_to" in result.notes[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an active feature: no note, no warning
        assert model.intervene(PROMPT, [scale_by(Feature(2, 10, 860), 2.0)]).notes == []
    # Active on the clean prompt, but switched off by the upstream say-Austin edits in this run:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # noted, not warned: steering a supernode does this routinely
        notes = model.intervene(PROMPT, [scale_by(SAY_AUSTIN, -2.0)]).notes
    assert any("feature 931 of layer 1 is switched off by the other interventions" in n for n in notes)


def test_cli_prints_the_mode_and_the_note():
    idle = _inactive_feature(toy(), 1, -1)
    r = subprocess.run([sys.executable, "-m", "circuit_atlas", "intervene", "--model", "toyworld", "--transcoders",
                        "toyworld-clt", "--prompt", PROMPT, "--scale", f"1:-1:{idle}=5", "--scale", "2:-1:860=-2"],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "mode: frozen_attention" in r.stdout.splitlines()[0]
    assert f"note: feature {idle} of layer 1 is not active" in r.stdout
