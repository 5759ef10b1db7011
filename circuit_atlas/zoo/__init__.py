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


def describe_zoo() -> str:
    """What is shipped, where it lies in this installation, and the names that load it."""
    import json

    lines = [f"shipped with circuit-atlas, in {ZOO_DIR}:"]
    for name, rel in {**MODELS, **TRANSCODERS}.items():
        path = ZOO_DIR / rel
        what = "model" if name in MODELS else "transcoders"
        if not path.is_dir():
            lines.append(f"  {name:14s} {what:11s} MISSING ({path}); `circuit-atlas zoo rebuild toyworld` makes it")
            continue
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        about = ""
        if what == "model":
            config = json.loads((path / "config.json").read_text())
            about = (f"{config.get('model_type')}, {config.get('num_hidden_layers')} layers, "
                     f"d_model {config.get('hidden_size')}, vocab {config.get('vocab_size')}")  # fmt: skip
        else:
            manifest = json.loads((path / "circuit_atlas_transcoders.json").read_text())
            about = f"{manifest['kind'].upper()}, {manifest['widths'][0]} features per layer, {manifest['activation']}"
            metrics = path / "metrics.json"
            if metrics.is_file():
                m = json.loads(metrics.read_text())
                about += f", FVU {m['fvu_mean']:.3f}, L0 {m['l0_mean']:.1f}"
        lines.append(f"  {name:14s} {what:11s} {size / 1e6:5.1f} MB  {about}  ({rel})")
    lines.append('load: ReplacementModel.from_pretrained("toyworld", "toyworld-clt"), or --model toyworld '
                 "--transcoders toyworld-clt on the command line")  # fmt: skip
    return "\n".join(lines)
