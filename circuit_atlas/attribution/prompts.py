"""The prompts file of `trace-batch`: one prompt per line (.txt), or JSON lines (.jsonl).

Text: every line is one prompt, exactly as written (a prompt cannot contain a newline; use JSON
lines for that). JSON lines: one object per line,

    {"prompt": "The capital of Texas is", "id": "texas", "target": " Austin"}

with optional "id" (names the graph file: letters, digits, `.`, `_`, `-`; unique in the file) and
optional "target" / "targets" (one or a list: a string is a token's text, an integer a vocabulary
id, as --target / --target-id on the command line). An empty line is an error, except at the end
of the file. Every problem is one ValueError naming the file, the line and the fix. Torch-free.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
TEXT_SUFFIXES = (".txt", "")
KEYS = ("prompt", "id", "target", "targets")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class PromptSpec:
    index: int
    """0-based position in the prompts file (the sharding key under torchrun)."""
    prompt: str
    id: str
    """names the graph file <id>.safetensors: given in the file, or the index as 00000, 00001, ..."""
    targets: tuple[str | int, ...] | None = None
    """token texts / ids to explain; None: the default targets (or --target of the command)."""
    line: int = 0
    """1-based line of the prompts file, for messages."""


def default_id(index: int) -> str:
    return f"{index:05d}"


def _targets(value, where: str) -> tuple[str | int, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f'{where}: "targets" is an empty list; leave it out for the default targets')
    for t in items:
        if isinstance(t, bool) or not isinstance(t, (str, int)) or t == "":
            raise ValueError(
                f"{where}: a target must be a token's text (a non-empty string) or a vocabulary id (an integer), "
                f"got {t!r}"
            )
    return tuple(items)


def _from_json(text: str, index: int, where: str) -> PromptSpec:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f'{where}: not valid JSON ({exc.msg}); write one object per line: {{"prompt": "..."}}'
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f'{where}: expected a JSON object such as {{"prompt": "..."}}, got {type(obj).__name__}')
    unknown = sorted(set(obj) - set(KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; the keys are {', '.join(KEYS)}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f'{where}: "prompt" must be a non-empty string, got {prompt!r}')
    if "target" in obj and "targets" in obj:
        raise ValueError(f'{where}: give "target" or "targets", not both')
    raw_targets = obj.get("targets", obj.get("target"))
    targets = None if raw_targets is None else _targets(raw_targets, where)
    gid = obj.get("id", default_id(index))
    if isinstance(gid, int) and not isinstance(gid, bool):
        gid = str(gid)
    if not isinstance(gid, str) or not ID_PATTERN.fullmatch(gid):
        raise ValueError(
            f'{where}: "id" {gid!r} cannot name a file; use letters, digits, ".", "_" and "-" '
            "(at most 128, starting with a letter or digit)"
        )
    return PromptSpec(index, prompt, gid, targets)


def read_prompts(path: str | Path) -> list[PromptSpec]:
    """The prompts of a .txt (one per line) or .jsonl file, checked; see the module docstring."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in JSON_SUFFIXES + TEXT_SUFFIXES:
        raise ValueError(f"prompts file {path}: unknown kind {suffix!r}; use .txt (one prompt per line) or .jsonl")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"prompts file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"prompts file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = text.removeprefix("\ufeff").splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines end the file
        lines.pop()
    if not lines:
        raise ValueError(f"prompts file {path} holds no prompts")
    specs, seen = [], {}
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if not line.strip():
            raise ValueError(f"{where}: empty line; remove it (every line is one prompt)")
        index = len(specs)
        if suffix in JSON_SUFFIXES:
            spec = _from_json(line, index, where)
        else:
            spec = PromptSpec(index, line, default_id(index))
        if spec.id in seen:
            raise ValueError(f"{where}: id {spec.id!r} is already used on line {seen[spec.id]}; ids must be unique")
        seen[spec.id] = number
        specs.append(PromptSpec(spec.index, spec.prompt, spec.id, spec.targets, number))
    return specs
