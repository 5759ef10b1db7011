"""A tiny saved model and a small word corpus shared by the training tests."""

import random

import pytest
from tiny import WORDS, save_tiny

from circuit_atlas.training import TrainConfig


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model"), "llama")


@pytest.fixture(scope="session")
def data_file(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(300)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _small_config(**overrides) -> TrainConfig:
    settings = dict(width=48, steps=8, batch_tokens=256, seq_len=16, lr_warmup_steps=2, eval_tokens=256,
                    checkpoint_every=0, target_l0=6)  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture
def small_config():
    """A factory of quick TrainConfigs (overrides as keyword arguments)."""
    return _small_config


def pytest_collection_modifyitems(items):
    # A few steps on a tiny model make poor transcoders by design; tests that check the warning use pytest.warns.
    for item in items:
        if "tests/training/" in str(item.fspath):
            item.add_marker(pytest.mark.filterwarnings("ignore::circuit_atlas.training.metrics.TrainingQualityWarning"))
