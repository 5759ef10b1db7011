"""A small toy-world corpus and dashboards built from it once per session (PLT and CLT)."""

import pytest

from circuit_atlas.features.dashboards import BuildConfig, build_dashboards
from circuit_atlas.toyworld.corpus import generate_corpus

# Small structures, so the oracle's choices are exercised (top-k full, bands filled from a sample).
SETTINGS = dict(seq_len=12, batch_size=16, top_k=5, sample_size=12, bands=3, band_examples=3, context_before=4,
                context_after=3, checkpoint_every=0)  # fmt: skip


def corpus(seed: int, n: int) -> list[str]:
    docs = generate_corpus(seed=seed, n_sentences=n)
    # one long document, so a document is cut into several windows
    return docs + [" ".join(docs[:6])]


@pytest.fixture(scope="session")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text("\n".join(corpus(5, 80)) + "\n\n")
    return path


@pytest.fixture(scope="session")
def config():
    return BuildConfig(**SETTINGS)


@pytest.fixture(scope="session")
def plt_dir(tmp_path_factory, data_file, config):
    out = tmp_path_factory.mktemp("dash") / "plt"
    build_dashboards("toyworld", "toyworld-plt", data_file, out, config, progress=False)
    return out


@pytest.fixture(scope="session")
def clt_dir(tmp_path_factory, data_file, config):
    out = tmp_path_factory.mktemp("dash") / "clt"
    build_dashboards("toyworld", "toyworld-clt", data_file, out, config, progress=False)
    return out
