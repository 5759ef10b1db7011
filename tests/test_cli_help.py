"""The command line's help and start-up: every option described, no heavy import before a command runs."""

import argparse
import re
import subprocess
import sys
from pathlib import Path

from circuit_atlas.cli import LAZY_COMMANDS, build_parser, parse_targets

ROOT = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _all_commands():
    """(name, parser) of every command and sub-command, lazy ones with their full options."""
    out = []
    for name in list(_subparsers(build_parser([]))):
        parser = _subparsers(build_parser([name]))[name]
        out.append((name, parser))
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in nested:
            out += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return out


def test_every_option_of_every_command_has_a_description():
    commands = _all_commands()
    assert {"trace", "export", "intervene", "estimate", "train-transcoders", "zoo list", "zoo rebuild", "demo"} <= {
        n for n, _ in commands
    }
    for name, parser in commands:
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help.strip(), (
                f"`{name}` option {action.option_strings or action.dest} has no help"
            )


def test_help_texts_named_in_the_issue():
    parsers = dict(_all_commands())
    export = parsers["export"].format_help()
    assert "viewer JSON" in export and "directory to write" in export  # was: options with no description at all
    intervene = parsers["intervene"].format_help()
    assert re.search(r"--prompt PROMPT\s+text to run", intervene)
    assert "frozen_attention: the prompt's attention patterns held" in intervene
    trace = " ".join(parsers["trace"].format_help().split())
    assert "toyworld" in trace and "toyworld-clt" in trace
    assert "--max-feature-nodes" in trace and "the most influential" in trace  # generated from AttributionConfig
    train = " ".join(parsers["train-transcoders"].format_help().split())
    assert "[8 x d_model]" in train and "]. [" not in train  # the default was shown twice: "[8 x d_model]. [None]"


def test_target_text_and_target_id_are_two_spellings():
    def targets(*argv):
        base = ["trace", "--model", "m", "--transcoders", "t", "--prompt", "p", "--out", "o"]
        return parse_targets(build_parser(base).parse_args([*base, *argv]).targets)

    assert targets("--target", "1") == ["1"]  # the text "1", not token id 1 (which is '!' or <bos>)
    assert targets("--target-id", "1") == [1]
    assert targets("--target", " Austin", "--target-id", "1234", "--target", "7") == [" Austin", 1234, "7"]
    assert targets() is None


def test_help_starts_without_torch():
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "circuit_atlas", "--help"],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0 and "trace" in r.stdout and "train-transcoders" in r.stdout
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    heavy = {m for m in imported if m.split(".")[0] in ("torch", "transformers", "pandas", "matplotlib")}
    assert not heavy, f"--help imported {sorted(heavy)[:5]}"
    r = subprocess.run([sys.executable, "-c", "import sys, circuit_atlas; circuit_atlas.__version__; "
                        "print(sorted(m for m in ('torch', 'pandas', 'transformers') if m in sys.modules))"],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.stdout.strip() == "[]", r.stderr


def test_lazy_command_gets_its_full_parser_only_when_asked():
    assert "train-transcoders" in LAZY_COMMANDS
    stub = _subparsers(build_parser(["trace"]))["train-transcoders"]
    full = _subparsers(build_parser(["-v", "train-transcoders"]))["train-transcoders"]
    assert "--steps" not in stub.format_help() and "--steps" in full.format_help()


def test_package_names_still_load():
    import circuit_atlas as ca

    assert callable(ca.attribute) and ca.ReplacementModel.__name__ == "ReplacementModel"
    assert {"attribute", "Graph", "LogitDiff"} <= set(dir(ca))


def test_zoo_list_names_what_is_shipped_and_where():
    r = subprocess.run([sys.executable, "-m", "circuit_atlas", "zoo", "list"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for name in ("toyworld ", "toyworld-clt", "toyworld-plt"):
        assert name in r.stdout
    assert str(ROOT / "circuit_atlas" / "zoo") in r.stdout and "FVU" in r.stdout


def test_demo_output_is_ignored_by_git():
    r = subprocess.run(["git", "check-ignore", "-q", "circuit-atlas-demo/graph.safetensors"], cwd=ROOT)
    assert r.returncode == 0
