"""The manifest of a trace-batch folder (DIR/manifest.json) and the file digest it records.

Apart from batch.py so that readers (the graph server's import) need neither torch nor the command
line: batch.py takes its CLI helpers from cli.py, and cli.py reaches the server through the demo.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST_FORMAT = {"format": "circuit-atlas-trace-batch", "version": 1}
MANIFEST = "manifest.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(out_dir: str | Path) -> dict:
    """The manifest of a trace-batch folder, checked for format and version."""
    path = Path(out_dir) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{out_dir} has no {MANIFEST}; is it a trace-batch output folder?") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT["format"]:
        raise ValueError(f"{path} is not a trace-batch manifest (format {MANIFEST_FORMAT['format']!r})")
    if str(data.get("version")) != str(MANIFEST_FORMAT["version"]):
        raise ValueError(f"{path} has manifest version {data.get('version')!r}; this circuit-atlas reads version "
                         f"{MANIFEST_FORMAT['version']} (upgrade circuit-atlas, or re-run trace-batch)")  # fmt: skip
    if not isinstance(data.get("graphs"), list):
        raise ValueError(f'{path} has no "graphs" list')
    return data
