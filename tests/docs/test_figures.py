"""Every figure the docs state about the intervention experiments comes from a script, and is checked.

(a) examples/two_hop.py and examples/multilingual.py, re-run (their `measure`, without diagrams) on
    the shipped toy world with both transcoder sets, still produce examples/results.json.
(b) The experiment tables of README.md and examples/README.md state what results.json holds: each
    row names one experiment (ROWS), each results cell its top output, the probability printed with
    it and the other tokens' probabilities in brackets ("TOKEN p", "TOKEN p → p" for before → after,
    "was TOKEN p" for before), each rounded as printed; the "paper" cell says whether the runs
    agree with the papers ("same", "differs", "CLT same", "PLT same"; "—" where no expectation is
    stated). A few sentences that quote counts are checked too.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sys
from pathlib import Path

import pytest

from circuit_atlas import ReplacementModel

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RESULTS = EXAMPLES / "results.json"
TRANSCODERS = ("toyworld-clt", "toyworld-plt")
SCRIPTS = ("two_hop", "multilingual")
TOLERANCE = 1e-4  # probabilities: float rounding between machines, far below what any doc prints

# Row label (first cell) -> (script, experiment name in results.json)
ROWS = {
    "Texas ×−2": ("two_hop", "Texas_x-2"),
    "say a capital ×0": ("two_hop", "say_a_capital_x0"),
    "say a capital ×−2": ("two_hop", "say_a_capital_x-2"),
    "say Austin ×−2": ("two_hop", "say_Austin_x-2"),
    "capital ×−2": ("two_hop", "capital_x-2"),
    "Texas + say Austin ×−2, California +2×": ("two_hop", "swap_California"),
    "Texas + say Austin ×−2, California (Oakland prompt) +2×": ("two_hop", "swap_California"),
    "Texas + say Austin ×−2, China +2×": ("two_hop", "swap_China"),
    "Texas + say Austin ×−2, China (Shanghai prompt) +2×": ("two_hop", "swap_China"),
    "Texas + say Austin ×−2, British Columbia +2×": ("two_hop", "swap_British_Columbia"),
    "Texas + say Austin ×−2, British Columbia (Vancouver prompt) +2×": ("two_hop", "swap_British_Columbia"),
    "Texas only ×−2, California state +2×": ("two_hop", "swap_California_state_only"),
    "Texas only ×−2, China state +2×": ("two_hop", "swap_China_state_only"),
    "Texas only ×−2, British Columbia state +2×": ("two_hop", "swap_British_Columbia_state_only"),
    "French ×0": ("multilingual", "french_x0"),
    "French ×−2": ("multilingual", "french_x-2"),
    '"Le contraire de petit est": French ×−2': ("multilingual", "french_x-2"),
    "French → Chinese, −2×/+2× rule": ("multilingual", "French_to_Chinese_-2x"),
    "French → Chinese, 0×/1× rule": ("multilingual", "French_to_Chinese_0x"),
    "French ×0, Chinese ×1 (patching)": ("multilingual", "French_to_Chinese_0x"),
    "French → English, −2×/+2× rule": ("multilingual", "French_to_English_-2x"),
    "French → English, 0×/1× rule": ("multilingual", "French_to_English_0x"),
    "petit → grand, −2×/+2× rule": ("multilingual", "petit_to_grand_-2x"),
    "petit → grand, 0×/1× rule": ("multilingual", "petit_to_grand_0x"),
    "opposite → synonym, −2×/+2× rule": ("multilingual", "opposite_to_synonym_-2x"),
    "opposite ×−2, synonym +2×": ("multilingual", "opposite_to_synonym_-2x"),
    "opposite → synonym, 0×/1× rule": ("multilingual", "opposite_to_synonym_0x"),
}
TOKEN = r'"[^"]*"|[^\s"()]+'  # a quoted token (" Austin"), or a bare one (大)
PCT = r"\d+(?:\.\d+)?\s?%"
ABSENT = ("(no such features found)", "—")  # the rule finds no supernode with these transcoders


def _example(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return __import__(name)


@functools.cache
def results() -> dict:
    return json.loads(RESULTS.read_text())


@functools.cache
def toyworld(transcoders: str) -> ReplacementModel:
    return ReplacementModel.from_pretrained("toyworld", transcoders)


# --- (a) the scripts still produce results.json ---------------------------------------------------
def _assert_same(now, stored, where: str) -> None:
    if isinstance(stored, float) or isinstance(now, float):
        assert isinstance(now, (int, float)) and math.isclose(now, stored, abs_tol=TOLERANCE), (
            f"{where}: {now} != {stored}"
        )
    elif isinstance(stored, dict):
        assert isinstance(now, dict) and now.keys() == stored.keys(), f"{where}: keys {list(now)} != {list(stored)}"
        for key in stored:
            _assert_same(now[key], stored[key], f"{where}.{key}")
    elif isinstance(stored, list):
        assert isinstance(now, list) and len(now) == len(stored), f"{where}: {now} != {stored}"
        for i, (a, b) in enumerate(zip(now, stored)):
            _assert_same(a, b, f"{where}[{i}]")
    else:
        assert now == stored, f"{where}: {now!r} != {stored!r}"


@pytest.mark.parametrize("transcoders", TRANSCODERS)
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_scripts_still_produce_results_json(script, transcoders, capsys):
    stored = results()
    assert (stored["format"], stored["version"]) == ("circuit-atlas-example-results", 1)
    now = _example(script).measure(toyworld(transcoders), transcoders, out=None)
    now = json.loads(json.dumps(now, ensure_ascii=False))  # as written: tuples become lists
    _assert_same(now, stored[script][transcoders], f"{script}[{transcoders}]")
    # every expectation the run contradicts is flagged where it is printed
    printed = capsys.readouterr().out
    contradicted = [name for name, e in now["experiments"].items() if e["agrees"] is False]
    assert printed.count("-> CONTRADICTED by this run") == len(contradicted)
    assert printed.count("-> agrees") == sum(e["agrees"] is True for e in now["experiments"].values())
    if (script, transcoders) == ("two_hop", "toyworld-clt"):
        assert "capital_x-2" in contradicted  # " Austin" 93 %, where the papers name the state


# --- (b) the docs state results.json ---------------------------------------------------------------
def tables(path: Path) -> list[tuple[list[str], list[list[str]]]]:
    """The experiment tables of a markdown file: (header cells, rows of cells)."""
    out, block = [], []
    for line in [*path.read_text().splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if len(block) > 2 and re.match(r"(intervention|experiment)\b", block[0][0]):
            out.append((block[0], block[2:]))
        block = []
    return out


def shows(printed: str, p: float) -> bool:
    """Whether a printed percentage ("9.5 %", "22%") is p rounded as printed."""
    number = printed.rstrip("%").strip()
    decimals = len(number.split(".")[1]) if "." in number else 0
    return abs(100 * p - float(number)) <= 0.5 * 10**-decimals + 1e-9


def _token(text: str) -> str:
    return json.loads(text) if text.startswith('"') else text


def _prob(entry: dict, token: str) -> float:
    """The probability of `token` measured in an experiment (or the clean run)."""
    if token in entry["key"]:
        return entry["key"][token]
    for t, p in entry["top"]:
        if t == token:
            return p
    raise AssertionError(f"{token!r} was not measured (key tokens {list(entry['key'])}, top {entry['top']})")


def check_cell(cell: str, run: dict, name: str, where: str) -> None:
    """A results cell against results.json's run (one script, one transcoder set)."""
    entry = run["experiments"].get(name)
    if cell in ABSENT:
        assert entry is None and where, f"{where}: says no result, but results.json has {name}"
        return
    assert entry is not None, f"{where}: states {cell!r}, but results.json has no {name} run"
    m = re.fullmatch(rf"({TOKEN})(?:\s+({PCT}))?(?:\s+\((.*)\))?", cell.replace("**", ""))
    assert m, f"{where}: cannot read {cell!r} (expected: TOKEN [p%] [(TOKEN p%, ...)])"
    top, p = entry["top"][0]
    assert _token(m.group(1)) == top, f"{where}: top output {m.group(1)}, results.json {top!r}"
    if m.group(2):
        assert shows(m.group(2), p), f"{where}: {m.group(1)} {m.group(2)}, results.json {p:.4%}"
    for detail in filter(None, (d.strip() for d in (m.group(3) or "").split(","))):
        d = re.fullmatch(rf"(was\s+)?({TOKEN})\s+({PCT})(?:\s*→\s*({PCT}))?", detail)
        assert d, f"{where}: cannot read {detail!r} (expected TOKEN p%, TOKEN p% → p% or was TOKEN p%)"
        token = _token(d.group(2))
        before, after = (d.group(3), d.group(4)) if (d.group(1) or d.group(4)) else (None, d.group(3))
        if before:
            assert shows(before, _prob(run["clean"], token)), f"{where}: {detail!r}: before {run['clean']['key']}"
        if after:
            assert shows(after, _prob(entry, token)), f"{where}: {detail!r}: after {_prob(entry, token):.4%}"


def check_verdict(cell: str, runs: dict[str, dict], name: str, where: str) -> None:
    """The "paper" cell: whether the runs of the table's columns agree with the papers."""
    stated = [runs[t]["experiments"][name] for t in runs if name in runs[t]["experiments"]]
    expected = {e["expected"] for e in stated}
    if cell == "—":
        assert expected == {None}, f"{where}: states no expectation, but the script checks {expected}"
        return
    assert None not in expected, f"{where}: states a verdict, but the script checks no expectation"
    verdict = re.sub(r"\s*\(see below\)$", "", cell.rsplit(":", 1)[-1].strip())
    agree = {t for t in runs if name in runs[t]["experiments"] and runs[t]["experiments"][name]["agrees"]}
    have = {t for t in runs if name in runs[t]["experiments"]}
    truth = {"same": agree == have, "differs": not agree, "CLT same": agree == {"toyworld-clt"} != have,
             "PLT same": agree == {"toyworld-plt"} != have}  # fmt: skip
    assert verdict in truth, f"{where}: verdict {verdict!r} is none of {list(truth)}"
    assert truth[verdict], f"{where}: says {verdict!r}; agreeing runs {sorted(agree)} of {sorted(have)}"


@pytest.mark.parametrize("doc", ["README.md", "examples/README.md"])
def test_the_experiment_tables_state_results_json(doc):
    found = tables(REPO / doc)
    assert found, f"{doc} has no experiment table"
    n_rows = 0
    for header, rows in found:
        columns = {i: "toyworld-plt" if "PLT" in h else "toyworld-clt" for i, h in enumerate(header[1:-1], 1)}
        assert header[-1] == "paper"
        for row in rows:
            label = row[0]
            assert label in ROWS, f"{doc}: row {label!r} names no experiment this test knows: add it to ROWS"
            script, name = ROWS[label]
            for i, transcoders in columns.items():
                check_cell(row[i], results()[script][transcoders], name, f"{doc}, {label!r}, {header[i]!r}")
            runs = {t: results()[script][t] for t in columns.values()}
            check_verdict(row[-1], runs, name, f"{doc}, {label!r}, paper")
            n_rows += 1
    assert n_rows >= 8


def test_the_clean_outputs_and_counts_in_examples_readme():
    text = (EXAMPLES / "README.md").read_text()
    clean = re.findall(rf"(Two-hop|Multilingual), clean output ({TOKEN}) ({PCT})", text)
    assert len(clean) == 2
    for title, token, p in clean:
        for transcoders in TRANSCODERS:
            run = results()["two_hop" if title == "Two-hop" else "multilingual"][transcoders]
            assert run["clean"]["top"][0][0] == _token(token) and shows(p, run["clean"]["top"][0][1])
    two_hop, multilingual = results()["two_hop"]["toyworld-clt"], results()["multilingual"]["toyworld-clt"]
    (say, specific, lo, hi), = re.findall(r"(\d+) of (\d+) \(layers (\d+)–(\d+), city and last tokens\)", text)  # fmt: skip
    facts = two_hop["facts"]
    assert (int(say), int(specific)) == (facts["supernode_sizes"]["say Austin"], facts["dallas_specific"])
    assert (int(lo), int(hi)) == (min(facts["say_austin_layers"]), max(facts["say_austin_layers"]))
    (both, french), = re.findall(r"only (\d+) of the (\d+) French features", text)  # fmt: skip
    facts = multilingual["facts"]
    assert (int(both), int(french)) == (facts["french_and_petit"], facts["supernode_sizes"]["French"])
    (about,) = re.findall(r"Sacramento the top prediction \(at about (\d+%)", text)
    assert shows(about, two_hop["experiments"]["swap_California"]["top"][0][1])


def test_the_table_reader_catches_a_wrong_figure():
    """The old README's French x-2 row (" grand" 0.1 % where the run gives 0.9 %) fails the check."""
    runs = results()["multilingual"]
    with pytest.raises(AssertionError, match="after"):
        check_cell('**" big"** (" grand" 97 % → 0.1 %)', runs["toyworld-clt"], "french_x-2", "old README")
    check_cell('**" big"** (" grand" 97 % → 0.9 %)', runs["toyworld-clt"], "french_x-2", "new README")
    with pytest.raises(AssertionError, match="says 'same'"):  # capital x-2 does not name the state
        check_verdict("names the state: same", runs_two_hop(), "capital_x-2", "claim")


def runs_two_hop() -> dict:
    return {t: results()["two_hop"][t] for t in TRANSCODERS}
