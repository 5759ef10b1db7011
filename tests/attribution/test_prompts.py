"""The prompts file of trace-batch: text or JSON lines, and one clear error naming the line for each mistake."""

from __future__ import annotations

import pytest

from circuit_atlas.attribution.prompts import PromptSpec, read_prompts


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_text_lines_are_prompts_as_written(tmp_path):
    path = _write(tmp_path, "p.txt", "The capital of Texas is\n  two spaces stay \n\n\n")
    assert read_prompts(path) == [
        PromptSpec(0, "The capital of Texas is", "00000", None, 1),
        PromptSpec(1, "  two spaces stay ", "00001", None, 2),
    ]


def test_json_lines_with_id_and_targets(tmp_path):
    text = '{"prompt": "a b", "id": "dallas", "target": " Austin"}\n{"prompt": "c", "targets": [" x", 12]}\n{"prompt": "d"}\n'
    specs = read_prompts(_write(tmp_path, "p.jsonl", text))
    assert [(s.id, s.targets, s.line) for s in specs] == [("dallas", (" Austin",), 1), ("00001", (" x", 12), 2),
                                                          ("00002", None, 3)]  # fmt: skip


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("p.txt", "a\n\nb\n", "p.txt:2: empty line; remove it"),
        ("p.txt", "\n\n", "holds no prompts"),
        ("p.jsonl", '{"prompt": "a"}\n{"prompt": "b"\n', "p.jsonl:2: not valid JSON"),
        ("p.jsonl", '["a"]\n', "p.jsonl:1: expected a JSON object"),
        ("p.jsonl", '{"prompt": ""}\n', 'p.jsonl:1: "prompt" must be a non-empty string'),
        ("p.jsonl", '{"text": "a"}\n', "p.jsonl:1: unknown key(s) 'text'; the keys are prompt, id, target, targets"),
        ("p.jsonl", '{"prompt": "a", "id": "../up"}\n', "p.jsonl:1: \"id\" '../up' cannot name a file"),
        ("p.jsonl", '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', "p.jsonl:2: id 'x' is already used"),
        ("p.jsonl", '{"prompt": "a", "id": "00001"}\n{"prompt": "b"}\n', "p.jsonl:2: id '00001' is already used"),
        ("p.jsonl", '{"prompt": "a", "target": 1.5}\n', "p.jsonl:1: a target must be a token's text"),
        ("p.jsonl", '{"prompt": "a", "targets": []}\n', 'p.jsonl:1: "targets" is an empty list'),
        ("p.jsonl", '{"prompt": "a", "target": "x", "targets": ["y"]}\n', 'p.jsonl:1: give "target" or "targets"'),
        ("p.csv", "a\n", "unknown kind '.csv'; use .txt (one prompt per line) or .jsonl"),
    ],
)
def test_bad_file_is_one_error_naming_the_line(tmp_path, name, text, message):
    with pytest.raises(ValueError) as err:
        read_prompts(_write(tmp_path, name, text))
    assert message in str(err.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="prompts file .* does not exist"):
        read_prompts(tmp_path / "none.txt")
    path = tmp_path / "bin.txt"
    path.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        read_prompts(path)
