"""Text in, fixed-length token sequences out.

Accepted data: a text file, a .jsonl file, or a directory holding .txt / .jsonl files (read in
sorted order, recursively). Documents are the non-empty lines of a text file and the records of a
.jsonl file (a string, or an object with a "text" string), tokenized without special tokens.
Position 0 of every sequence holds BOS, as in the prompts attribution sees. Two layouts:

- packed (default): documents are joined into one stream, each preceded by BOS; the stream is cut
  into pieces of seq_len - 1 tokens and every sequence is BOS + piece. No padding.
- one document per sequence: BOS + the document, cut at seq_len and right-padded. For models
  trained that way; pads are marked invalid and never trained or evaluated on (attention is
  causal, so right padding does not change the real positions).

Batches are a pure function of (seed, step): step s takes sequences s*B .. (s+1)*B - 1 of an
endless stream of seeded epoch permutations. A resumed or data-parallel run therefore draws the
same sequences without storing any sampler state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".jsonl")


def decode_text(path: Path, raw: bytes, expected: str = "UTF-8 text or .jsonl") -> str:
    """The bytes of a corpus file as text, or one clear error (binary, not UTF-8). Shared with the dashboards."""
    if b"\x00" in raw:
        raise ValueError(f"{path} is not a text file (it holds NUL bytes); give {expected}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); give {expected}") from err


def _read_text(path: Path) -> str:
    return decode_text(path, path.read_bytes())


def jsonl_records(path: Path, text: str) -> Iterator[str]:
    """The non-blank documents of a .jsonl file: each line a string or an object with a "text" string."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}:{number} is not valid JSON ({err.msg}); a .jsonl file holds one record a line"
            ) from err
        if isinstance(record, dict):
            record = record.get("text")
        if not isinstance(record, str):
            raise ValueError(f'{path}:{number}: a .jsonl record must be a string or an object with a "text" string')
        if record.strip():
            yield record


def _documents(path: Path) -> list[str]:
    text = _read_text(path)
    if path.suffix != ".jsonl":
        return [line for line in text.splitlines() if line.strip()]
    return list(jsonl_records(path, text))


def read_documents(path: str | os.PathLike) -> list[str]:
    """The documents of a text / .jsonl file or of a directory of them. ValueError if there are none."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"{p} holds no .txt or .jsonl files")
    else:
        files = [p]
    docs = [doc for f in files for doc in _documents(f)]
    if not docs:
        raise ValueError(f"{p} is empty: it holds no text to train on")
    return docs


def separator_id(tokenizer) -> int:
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if candidate is not None:
            return int(candidate)
    raise ValueError("the tokenizer has no BOS, EOS or pad token to start sequences with")


def _token_lists(docs: list[str], tokenizer, enough) -> list[list[int]]:
    """Token ids of the non-empty documents, in chunks until enough(lists, n_tokens) is true."""
    out, n_tokens = [], 0
    for i in range(0, len(docs), 4096):
        for ids in tokenizer(docs[i : i + 4096], add_special_tokens=False)["input_ids"]:
            if ids:
                out.append(ids)
                n_tokens += len(ids) + 1
        if enough(out, n_tokens):
            break
    if not out:
        raise ValueError("the data holds no tokens once tokenized")
    return out


def tokenize(docs: list[str], tokenizer, seq_len: int, pack: bool = True,
             max_sequences: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Sequences (N, seq_len) starting with BOS, and their valid (non-pad) positions (N, seq_len).

    max_sequences: stop tokenizing once that many sequences can be made (large corpora are
    read only as far as a run needs).
    """
    bos = separator_id(tokenizer)
    cap = max_sequences or float("inf")
    if pack:
        token_lists = _token_lists(docs, tokenizer, lambda lists, n: n >= (cap + 1) * (seq_len - 1))
    else:
        token_lists = _token_lists(docs, tokenizer, lambda lists, n: len(lists) >= cap)[:max_sequences]
    if not pack:
        pad = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, bos) if t is not None)
        ids = torch.full((len(token_lists), seq_len), pad, dtype=torch.long)
        valid = torch.zeros(len(token_lists), seq_len, dtype=torch.bool)
        cut = 0
        for i, doc in enumerate(token_lists):
            row = [bos] + doc[: seq_len - 1]
            cut += len(doc) > seq_len - 1
            ids[i, : len(row)] = torch.tensor(row)
            valid[i, : len(row)] = True
        if cut:
            log.warning("%d of %d documents are longer than seq_len %d and were cut", cut, len(token_lists), seq_len)
        return ids, valid
    stream = [t for doc in token_lists for t in (bos, *doc)][1:]  # every sequence gets its own BOS
    piece = seq_len - 1
    n = min(len(stream) // piece, max_sequences or len(stream))
    if n == 0:
        raise ValueError(f"the data has {len(stream)} tokens, fewer than one sequence of seq_len {seq_len}")
    body = torch.tensor(stream[: n * piece], dtype=torch.long).view(n, piece)
    ids = torch.cat([torch.full((n, 1), bos, dtype=torch.long), body], dim=1)
    return ids, torch.ones_like(ids, dtype=torch.bool)


class TokenData:
    """Training and held-out sequences of one corpus (with their valid positions), and the batch order."""

    def __init__(
        self, train: tuple[torch.Tensor, torch.Tensor], held_out: tuple[torch.Tensor, torch.Tensor], seed: int
    ):
        self.train, self.train_valid = train
        self.eval, self.eval_valid = held_out
        self.seed = seed
        self._perms: dict[int, torch.Tensor] = {}

    @classmethod
    def from_documents(cls, docs: list[str], tokenizer, seq_len: int, eval_tokens: int, seed: int,
                       eval_docs: list[str] | None = None, pack: bool = True,
                       train_sequences: int | None = None) -> TokenData:  # fmt: skip
        """Tokenize; the held-out sequences come from eval_docs, or else from the tail (<= 10 %).

        train_sequences: how many sequences the run will draw; the corpus is tokenized only as far
        as needed for that many plus the held-out ones (all of it when None).
        """
        need = None
        if train_sequences is not None:  # one pass of the run, plus the held-out tail
            held = 0 if eval_docs is not None else (eval_tokens // (seq_len - 1) + 1 if pack else eval_tokens)
            need = max(train_sequences + held, math.ceil(train_sequences / 0.9) + 1)
        ids, valid = tokenize(docs, tokenizer, seq_len, pack, need)
        if eval_docs is not None:
            e_ids, e_valid = tokenize(eval_docs, tokenizer, seq_len, pack, eval_tokens + 1)
            n = _sequences_for(e_valid, eval_tokens)
            return cls((ids, valid), (e_ids[:n], e_valid[:n]), seed)
        n_eval = min(_sequences_for(valid.flip(0), eval_tokens), len(ids) // 10) if eval_tokens > 0 else 0
        if eval_tokens > 0 and n_eval == 0:
            if len(ids) < 2:
                raise ValueError(
                    f"the data makes {len(ids)} sequence of {seq_len} tokens: too little to hold any out for "
                    "evaluation; add text, lower seq_len or pass separate evaluation data"
                )
            n_eval = 1
        split = len(ids) - n_eval
        return cls((ids[:split], valid[:split]), (ids[split:], valid[split:]), seed)

    def fingerprint(self) -> str:
        """A hash of the training and held-out tokens (a resumed run must see the same data)."""
        h = hashlib.sha256()
        for t in (self.train, self.train_valid, self.eval, self.eval_valid):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()[:16]

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(len(self.train), generator=g)}
        return self._perms[epoch]

    def batch_indices(self, step: int, size: int) -> torch.Tensor:
        """Indices (size,) of the training sequences of batch `step`."""
        n = len(self.train)
        out = torch.empty(size, dtype=torch.long)
        for i, pos in enumerate(range(step * size, (step + 1) * size)):
            out[i] = self._perm(pos // n)[pos % n]
        return out

    def batch(self, step: int, size: int, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's share of batch `step`: ids and valid positions, each (size / world, seq_len)."""
        idx = self.batch_indices(step, size)
        share = size // world
        idx = idx[rank * share : (rank + 1) * share]
        return self.train[idx], self.train_valid[idx]

    def batch_token_count(self, step: int, size: int, skip: int) -> int:
        """Valid positions >= skip in the whole batch `step` (all processes together)."""
        return int(self.train_valid[self.batch_indices(step, size), skip:].sum())


def trim_padding(ids: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing columns that are padding in every row (causal attention: nothing else changes)."""
    length = int(valid.any(0).nonzero().max()) + 1 if valid.any() else 1
    return ids[:, :length], valid[:, :length]


def _sequences_for(valid: torch.Tensor, tokens: int) -> int:
    """How many sequences (from the top of `valid`) hold at least `tokens` valid positions."""
    if tokens <= 0:
        return 0
    counts = valid.sum(1).cumsum(0)
    return min(len(valid), int((counts < tokens).sum()) + 1)
