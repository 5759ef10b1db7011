"""Documents in, windows out: the unit every recorded activation belongs to.

A text file is one document per non-blank line; a .jsonl file one document per record (a string or
an object with a "text" string); a directory one document per file (its .jsonl files one per
record), read in sorted order. A document is tokenized on its own and cut into windows of
seq_len - 1 tokens, each preceded by BOS; documents never share a window, so an activation is the
model's on that document alone. Windows are numbered in stream order (the id every example and
every tie-break refers to), so any process reading the same corpus sees the same numbering.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...training.data import decode_text, jsonl_records


@dataclass
class Window:
    id: int  # global, in stream order
    doc: int  # document number
    ids: list[int]  # BOS + up to seq_len - 1 tokens


def _decode(path: Path, raw: bytes) -> str:
    return decode_text(path, raw, "UTF-8 text, .jsonl or a folder of text")


def _jsonl(path: Path, text: str) -> Iterator[str]:
    return jsonl_records(path, text)  # the trainer's reader: one .jsonl dialect for every corpus


def corpus_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        if not files:
            raise ValueError(f"data folder {p} holds no files; put one document per file in it")
        return files
    return [p]


def iter_documents(path: str | os.PathLike) -> Iterator[str]:
    """The documents of a file or folder (see the module docstring), streamed file by file."""
    p = Path(path).expanduser()
    folder = p.is_dir()
    found = False
    for f in corpus_files(p):
        text = _decode(f, f.read_bytes())
        if f.suffix == ".jsonl":
            docs = _jsonl(f, text)
        elif folder:
            docs = iter([text] if text.strip() else [])
        else:
            docs = (line for line in text.splitlines() if line.strip())
        for doc in docs:
            found = True
            yield doc
    if not found:
        raise ValueError(f"{p} is empty: it holds no text to build dashboards from")


def fingerprint(path: str | os.PathLike) -> str:
    """A hash of the corpus content (file names relative to it, and bytes)."""
    p = Path(path).expanduser()
    h = hashlib.sha256()
    for f in corpus_files(p):
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def iter_windows(docs: Iterator[str], tokenizer, bos: int, seq_len: int, first_id: int = 0) -> Iterator[Window]:
    """Windows of BOS + <= seq_len - 1 tokens; a document never shares a window with another."""
    piece = seq_len - 1
    wid = first_id
    chunk: list[str] = []

    def flush(chunk, start_doc):
        nonlocal wid
        for k, ids in enumerate(tokenizer(chunk, add_special_tokens=False)["input_ids"]):
            for s in range(0, len(ids), piece):
                yield Window(wid, start_doc + k, [bos, *ids[s : s + piece]])
                wid += 1

    n_doc = 0
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == 1024:  # tokenizing in chunks is much faster than one call per document
            yield from flush(chunk, n_doc)
            n_doc += len(chunk)
            chunk = []
    if chunk:
        yield from flush(chunk, n_doc)
