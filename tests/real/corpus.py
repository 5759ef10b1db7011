"""A real English text corpus from a registry: the Debian Reference (Debian package
`debian-reference-en`, GPL-2+; Osamu Aoki et al.), ~880 KB of plain English prose about the
system, shipped as /usr/share/debian-reference/debian-reference.en.txt.gz. Installed with
`apt-get install debian-reference-en`; nothing comes from a hub."""

from __future__ import annotations

import gzip
from pathlib import Path

from circuit_atlas.models.gguf import cache_root

SOURCE = Path("/usr/share/debian-reference/debian-reference.en.txt.gz")
INSTALL = "apt-get install debian-reference-en"


def debian_reference_text() -> Path:
    """The corpus as one UTF-8 .txt file (decompressed once into the circuit-atlas cache)."""
    if not SOURCE.is_file():
        raise RuntimeError(f"the training corpus {SOURCE} is missing; install it with `{INSTALL}` (as root)")
    out = cache_root() / "corpus" / "debian-reference.en.txt"
    if not out.is_file() or out.stat().st_mtime < SOURCE.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(gzip.decompress(SOURCE.read_bytes()).decode("utf-8"))
        tmp.replace(out)
    return out
