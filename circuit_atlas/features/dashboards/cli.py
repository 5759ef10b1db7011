"""`circuit-atlas features build | show | search | export | label` (also `python -m circuit_atlas.features`).

Every BuildConfig field is a `build` flag (--seq-len for seq_len), its docstring the help text.
Under `torchrun --nproc_per_node N -m circuit_atlas.features build ...` the corpus is sharded over
the processes and the merged result equals the single-process build.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import textwrap
from functools import cache

from .config import BuildConfig


@cache
def field_docs() -> dict[str, str]:
    """The docstring under each BuildConfig field, read from the source."""
    body = ast.parse(textwrap.dedent(inspect.getsource(BuildConfig))).body[0].body
    return {node.target.id: str(nxt.value.value) for node, nxt in itertools.pairwise(body)
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)}  # fmt: skip


def _add_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="local Hugging Face model directory (or 'toyworld')")
    p.add_argument(
        "--transcoders", required=True, help="transcoder directory, any supported format (or 'toyworld-clt')"
    )
    p.add_argument(
        "--data", required=True, help="text file (one document a line), .jsonl, or a folder (one document a file)"
    )
    p.add_argument(
        "--out", required=True, help="dashboards folder (created; an existing build there is resumed or extended)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    docs = field_docs()
    for f in dataclasses.fields(BuildConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        help_text = f"{docs.get(f.name, '')} [{default}]"
        if "bool" in str(f.type):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif "int" in str(f.type):
            p.add_argument(flag, dest=f.name, type=int, default=default, help=help_text)
        else:
            p.add_argument(flag, dest=f.name, default=default, help=help_text)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `features` with its sub-commands to an argparse subparsers object."""
    features = subparsers.add_parser("features", help="feature dashboards: build, show, search, export, label")
    sub = features.add_subparsers(dest="features_command", required=True)
    _add_build(sub.add_parser("build", help="one streaming pass over a corpus -> dashboards for every feature"))
    show = sub.add_parser("show", help="print one feature's dashboard (or its JSON); optionally draw it")
    show.add_argument("dir", help="dashboards folder, transcoder directory or zoo name (toyworld-clt)")
    show.add_argument("layer", type=int, help="layer of the feature")
    show.add_argument("index", type=int, help="index of the feature in its layer")
    show.add_argument("--json", action="store_true", help="print the circuit-tracer / Neuronpedia feature JSON")
    show.add_argument("--figure", default=None, help="also draw it to this .png / .svg path")
    show.add_argument("--examples", type=int, default=8, help="examples shown per band [8]")
    search = sub.add_parser("search", help="find features by label, by a token they fire on or promote")
    search.add_argument("dir", help="dashboards folder, transcoder directory or zoo name")
    search.add_argument("--label", default=None, help="text the label contains (case-insensitive)")
    search.add_argument("--fires-on", default=None, help="a token the feature peaks on (e.g. ' Texas')")
    search.add_argument("--promotes", default=None, help="a token the feature's decoder promotes (e.g. ' Austin')")
    search.add_argument("--limit", type=int, default=20, help="most features to list [20]")
    search.add_argument("--json", action="store_true", help="print the hits as JSON")
    export = sub.add_parser("export", help="write every feature as circuit-tracer viewer JSON: OUT/<scan>/<id>.json")
    export.add_argument("dir", help="dashboards folder, transcoder directory or zoo name")
    export.add_argument("--out", required=True, help="folder to write (OUT/<scan>/<feature id>.json + index.json)")
    export.add_argument("--scan", default=None, help="folder name (the graph's metadata.scan) [transcoder set name]")
    export.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    label = sub.add_parser("label", help="write (or with --clear, remove) a person's label for a feature")
    label.add_argument("dir", help="dashboards folder (labels go to its labels.json)")
    label.add_argument("layer", type=int, help="layer of the feature")
    label.add_argument("index", type=int, help="index of the feature in its layer")
    label.add_argument("text", nargs="?", default=None, help="the label (overrides the automatic one everywhere)")
    label.add_argument("--clear", action="store_true", help="remove the label, back to the automatic one")
    features.set_defaults(func=run)
    return features


def _dir(name: str):
    from .reader import find_dashboards

    found = find_dashboards(name)
    if found is None:
        raise FileNotFoundError(f"no feature dashboards for {name!r}; build them with `circuit-atlas features build`")
    return found


def run(args) -> int:
    cmd = args.features_command
    if cmd == "build":
        from .build import build_dashboards

        cfg = BuildConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BuildConfig)})
        result = build_dashboards(args.model, args.transcoders, args.data, args.out, cfg, progress=not args.no_progress)
        if result.path is not None:
            if result.skipped:
                print(f"{result.path}: already built on this corpus ({result.n_tokens} tokens); nothing to do")
            else:
                t = result.timings
                print(f"dashboards written to {result.path}: {result.new_tokens} new tokens, {result.n_tokens} in all "
                      f"({result.seconds:.1f} s; forward {t['forward']:.1f} s, encoders {t['encode']:.1f} s, "
                      f"bookkeeping {t['bookkeeping']:.1f} s)")  # fmt: skip
        return 0
    if cmd == "show":
        from .store import open_dashboards

        d = open_dashboards(_dir(args.dir)).dashboard(args.layer, args.index)
        print(json.dumps(d.to_json(), ensure_ascii=False, indent=1) if args.json else d.text(args.examples))
        if args.figure:
            d.figure(args.figure, args.examples)
        return 0
    if cmd == "search":
        from .search import search

        hits = search(
            _dir(args.dir), label=args.label, fires_on=args.fires_on, promotes=args.promotes, limit=args.limit
        )
        if args.json:
            print(json.dumps([dataclasses.asdict(h) for h in hits], ensure_ascii=False))
        else:
            print("\n".join(f"L{h.layer}/{h.index}\t{h.score:.4f}\t{h.label}" for h in hits) or "no features found")
        return 0
    if cmd == "export":
        from .export import export_folder

        print(f"feature JSON written to {export_folder(_dir(args.dir), args.out, args.scan, not args.no_progress)}")
        return 0
    if cmd == "label":
        from .labels import set_label

        if args.text is None and not args.clear:
            raise ValueError("give the label text, or --clear to remove the person-written label")
        set_label(_dir(args.dir), args.layer, args.index, None if args.clear else args.text)
        return 0
    raise ValueError(f"unknown features command {cmd!r}")


def main(argv: list[str] | None = None) -> int:
    import logging
    import os
    import sys

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(prog="python -m circuit_atlas.features", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(["features", *argv])
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"circuit-atlas: error: {e}", file=sys.stderr)
        return 2
