"""Attribution targets: salient selection, custom targets and their errors."""

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from circuit_atlas import Direction, LogitDiff, ReplacementModel, attribute
from circuit_atlas.transcoders.random import random_transcoders


@pytest.fixture(scope="module")
def model():
    tok = tiny_tokenizer()
    hf = tiny_model("llama", tokenizer=tok)
    cfg = hf.config
    return ReplacementModel(hf, tok, random_transcoders("plt", cfg.num_hidden_layers, cfg.hidden_size, 16))


def test_salient_targets_reach_probability(model):
    g = attribute(model, "the capital of", max_n_logits=50, desired_logit_prob=0.5, progress=False)
    probs = g.logit_probabilities
    assert probs.sum() >= 0.5 and probs[:-1].sum() < 0.5  # the smallest prefix reaching the mass
    assert list(probs) == sorted(probs, reverse=True)


def test_custom_targets_rows_are_linear_combinations(model):
    """A LogitDiff row equals the difference of the two token rows (the map is linear)."""
    g = attribute(model, "the capital of", targets=["Dallas", "Austin", LogitDiff("Dallas", "Austin")],
                  progress=False)  # fmt: skip
    rows = g.dense_rows(range(g.n_rows - 3, g.n_rows))
    assert torch.allclose(rows[0] - rows[1], rows[2], atol=1e-5)
    assert g.feature[-1] == model.vocab_size + 2 and g.logit_labels[-1] == "Dallas - Austin"


def test_direction_target(model):
    v = torch.randn(model.d_model)
    g = attribute(model, "the capital of", targets=[("my direction", v)], progress=False)
    assert g.logit_labels == ["my direction"] and g.metadata["targets"][0]["custom"]
    with pytest.raises(ValueError, match="must be a vector of size d_model"):
        attribute(model, "the capital of", targets=[Direction("bad", torch.randn(3))], progress=False)


def test_target_not_in_vocabulary(model):
    with pytest.raises(ValueError, match="not a single token in this vocabulary"):
        attribute(model, "the capital of", targets=["Dallas Austin"], progress=False)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        attribute(model, "the capital of", targets=[10**7], progress=False)
