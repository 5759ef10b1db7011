"""The toy world's shipped dashboards: built from its own corpus, small enough to ship.

`build_toyworld_dashboards(zoo_toyworld_dir)` writes <dir>/dashboards/{plt,clt} from a fresh
seeded corpus; `circuit-atlas zoo rebuild toyworld` calls it after training the transcoders.
The settings keep the package small (no running state is kept: rebuild, don't extend).
"""

from __future__ import annotations

from pathlib import Path

from .build import build_dashboards
from .config import BuildConfig

SENTENCES = 20_000
CORPUS_SEED_OFFSET = 2  # the training corpus is seed, the held-out one seed + 1
SHIPPED = BuildConfig(seq_len=32, top_k=8, sample_size=16, bands=3, band_examples=2, context_before=8,
                      context_after=3, n_logits=6, n_logits_per_layer=3, n_inputs=4, keep_state=False)  # fmt: skip


def build_toyworld_dashboards(toyworld_dir: str | Path, *, seed: int = 0, sentences: int = SENTENCES,
                              progress: bool = True) -> dict[str, Path]:  # fmt: skip
    """Dashboards of the PLT and CLT under toyworld_dir (which holds model/, plt/, clt/)."""
    from ...toyworld.corpus import write_corpus

    root = Path(toyworld_dir)
    corpus = root / ".dashboards-corpus.txt"
    write_corpus(corpus, seed=seed + CORPUS_SEED_OFFSET, n_sentences=sentences)
    out = {}
    try:
        for kind in ("plt", "clt"):
            target = root / "dashboards" / kind
            if target.exists():
                import shutil

                shutil.rmtree(target)
            build_dashboards(root / "model", root / kind, corpus, target, SHIPPED, progress=progress,
                             model_name="toyworld", transcoders_name=f"toyworld-{kind}")  # fmt: skip
            out[kind] = target
    finally:
        corpus.unlink(missing_ok=True)
    return out
