"""Models and transcoders shipped inside the package, loadable by name.

    ReplacementModel.from_pretrained("toyworld", "toyworld-clt")

Each entry is a directory under circuit_atlas/zoo/: `toyworld/model` (a Hugging Face model
directory), `toyworld/plt` and `toyworld/clt` (transcoder sets in our format).
"""

from __future__ import annotations

from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent

MODELS = {"toyworld": "toyworld/model"}
TRANSCODERS = {"toyworld-plt": "toyworld/plt", "toyworld-clt": "toyworld/clt"}


def _resolve(name: str, table: dict[str, str], what: str) -> Path:
    path = ZOO_DIR / table[name]
    if not path.is_dir():
        raise FileNotFoundError(
            f"the shipped {what} {name!r} is missing from this installation ({path}); "
            "rebuild it with `circuit-atlas zoo rebuild toyworld`"
        )
    return path


def resolve_model(name_or_path: str | Path) -> Path:
    """A local directory as given, or the directory of a shipped model name."""
    if isinstance(name_or_path, str) and name_or_path in MODELS and not Path(name_or_path).exists():
        return _resolve(name_or_path, MODELS, "model")
    return Path(name_or_path)


def resolve_transcoders(name_or_path: str | Path) -> Path:
    if isinstance(name_or_path, str) and name_or_path in TRANSCODERS and not Path(name_or_path).exists():
        return _resolve(name_or_path, TRANSCODERS, "transcoder set")
    return Path(name_or_path)
