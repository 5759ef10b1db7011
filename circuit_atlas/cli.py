"""Command line: `circuit-atlas trace | export | intervene | train-transcoders | convert-gguf | zoo rebuild | demo`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DTYPES = {"float32": "float32", "fp32": "float32", "float64": "float64", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}  # fmt: skip


def _add_attribution_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True, help="text to attribute (BOS is prepended)")
    p.add_argument("--out", required=True, help="graph file to write (.safetensors)")
    p.add_argument(
        "--target",
        action="append",
        default=None,
        help="explain this token instead of the top logits (repeatable; a single-token string or an id)",
    )
    p.add_argument("--max-n-logits", type=int, default=10, help="most logit targets in salient mode [10]")
    p.add_argument("--desired-logit-prob", type=float, default=0.95, help="probability mass of logit targets [0.95]")
    p.add_argument(
        "--max-feature-nodes",
        type=int,
        default=None,
        help="compute rows for at most this many features, by influence [all]",
    )
    p.add_argument("--batch-size", type=int, default=256, help="target rows per backward batch [256]")
    p.add_argument("--node-threshold", type=float, default=0.8, help="pruning: influence share of kept nodes [0.8]")
    p.add_argument("--edge-threshold", type=float, default=0.98, help="pruning: score share of kept edges [0.98]")
    p.add_argument("--json-dir", default=None, help="also write viewer JSON (circuit-tracer/Neuronpedia format) here")
    p.add_argument("--slug", default=None, help="name of the graph in --json-dir [file stem of --out]")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="compute dtype [float32]")
    p.add_argument("--device", default=None, help="torch device [cpu, or the model's]")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _parse_targets(values):
    if not values:
        return None
    return [int(v) if v.lstrip("-").isdigit() else v for v in values]


def run_trace(model, args) -> int:
    from .attribution.attribute import attribute
    from .summary import summarize

    graph = attribute(
        model, args.prompt, targets=_parse_targets(args.target), max_n_logits=args.max_n_logits,
        desired_logit_prob=args.desired_logit_prob, max_feature_nodes=args.max_feature_nodes,
        batch_size=args.batch_size, progress=not args.no_progress,
    )  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    graph.save(str(out))
    pruned = graph.prune(node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    print(summarize(graph, pruned, top_nodes=10, model=model))
    print(f"graph written to {out}  ({graph.metadata['attribution_seconds']:.2f} s attribution)")
    if args.json_dir:
        from .graph.export import write_graph_files

        slug = args.slug or out.stem
        path = write_graph_files(graph, args.json_dir, slug, node_threshold=args.node_threshold,
                                 edge_threshold=args.edge_threshold)  # fmt: skip
        print(f"viewer JSON written to {path}")
    return 0


def cmd_trace(args) -> int:
    import torch

    from .replacement_model import ReplacementModel

    dtype = getattr(torch, DTYPES[args.dtype])
    model = ReplacementModel.from_pretrained(args.model, args.transcoders, dtype=dtype, device=args.device)
    return run_trace(model, args)


def cmd_export(args) -> int:
    from .graph import Graph
    from .graph.export import write_graph_files

    graph = Graph.load(args.graph)
    path = write_graph_files(graph, args.json_dir, args.slug or Path(args.graph).stem,
                             node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)  # fmt: skip
    print(f"viewer JSON written to {path}")
    return 0


def parse_intervention(spec: str, kind: str):
    """'LAYER:POS:INDEX=NUMBER' -> set_to / scale_by. POS: an int (negative from the end), 'all',
    or 'P+' for position P onwards (generated tokens included)."""
    from .interventions import scale_by, set_to

    try:
        where, number = spec.split("=")
        layer, pos, index = where.split(":")
        if pos == "all":
            position = "all"
        elif pos.endswith("+"):
            position = slice(int(pos[:-1]), None)
        else:
            position = int(pos)
        subject, value = (int(layer), int(index)), float(number)
    except ValueError:
        raise ValueError(
            f"cannot read intervention {spec!r}; write LAYER:POSITION:FEATURE=NUMBER, e.g. 2:-1:432=0 "
            "(POSITION: an int, 'all', or '5+' for 5 onwards)"
        ) from None
    return (set_to if kind == "set" else scale_by)(subject, value, position=position)


def _top(model, logits, k: int) -> list[str]:
    import torch

    probs = torch.softmax(logits.double(), -1)
    top = probs.topk(k)
    return [f"{model.tokenizer.decode([i])!r} {100 * float(p):.1f}%" for p, i in zip(top.values, top.indices)]


def cmd_intervene(args) -> int:
    from .interventions import constrained
    from .replacement_model import ReplacementModel

    interventions = [parse_intervention(s, "set") for s in args.set or []]
    interventions += [parse_intervention(s, "scale") for s in args.scale or []]
    if not interventions:
        raise ValueError("give at least one --set or --scale intervention")
    mode = args.mode
    if args.constrain_layers is not None:
        if mode != "constrained":
            raise ValueError("--constrain-layers goes with --mode constrained")
        mode = constrained(int(x) for x in args.constrain_layers.split(","))
    model = ReplacementModel.from_pretrained(args.model, args.transcoders)
    before = model.intervene(args.prompt, [], mode=mode).logits[-1]
    after = model.intervene(args.prompt, interventions, mode=mode).logits[-1]
    print(f"prompt: {args.prompt!r}  mode: {args.mode}")
    width = max(len(x) for x in _top(model, before, args.top))
    print(f"{'before':{width}s}   after")
    for b, a in zip(_top(model, before, args.top), _top(model, after, args.top)):
        print(f"{b:{width}s}   {a}")
    if args.generate:
        plain = model.generate(args.prompt, [], max_new_tokens=args.generate, mode=mode).text
        steered = model.generate(args.prompt, interventions, max_new_tokens=args.generate, mode=mode).text
        print(f"generated before: {plain!r}\ngenerated after:  {steered!r}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out_dir))


def cmd_zoo(args) -> int:
    from .zoo.rebuild import rebuild_toyworld

    if args.name != "toyworld":
        raise ValueError(f"unknown zoo entry {args.name!r}; the zoo has: toyworld")
    rebuild_toyworld(args.out, seed=args.seed, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="circuit-atlas", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log phase timings")
    sub = parser.add_subparsers(dest="command", required=True)

    trace = sub.add_parser("trace", help="compute, save and summarise an attribution graph")
    trace.add_argument("--model", required=True, help="local Hugging Face model directory")
    trace.add_argument(
        "--transcoders", required=True, help="transcoder directory (circuit-tracer, GemmaScope npz or ours)"
    )
    _add_attribution_args(trace)
    trace.set_defaults(func=cmd_trace)

    export = sub.add_parser("export", help="write a saved graph as circuit-tracer / Neuronpedia viewer JSON")
    export.add_argument("graph", help="graph file (.safetensors)")
    export.add_argument("--json-dir", required=True)
    export.add_argument("--slug", default=None)
    export.add_argument("--node-threshold", type=float, default=0.8)
    export.add_argument("--edge-threshold", type=float, default=0.98)
    export.set_defaults(func=cmd_export)

    intervene = sub.add_parser("intervene", help="set or scale features and compare the top logits (and generations)")
    intervene.add_argument("--model", required=True, help="local Hugging Face model directory (or 'toyworld')")
    intervene.add_argument(
        "--transcoders", required=True, help="transcoder directory (or 'toyworld-clt' / 'toyworld-plt')"
    )
    intervene.add_argument("--prompt", required=True)
    intervene.add_argument(
        "--set", action="append", metavar="L:P:F=V", help="set feature F of layer L at position P to V"
    )
    intervene.add_argument(
        "--scale", action="append", metavar="L:P:F=K", help="multiply that feature's activation by K"
    )
    intervene.add_argument("--mode", choices=["free", "frozen_attention", "constrained"], default="free")
    intervene.add_argument(
        "--constrain-layers", default=None, help="with --mode constrained: comma-separated layers [all]"
    )
    intervene.add_argument(
        "--generate", type=int, default=0, metavar="N", help="also generate N tokens before and after"
    )
    intervene.add_argument("--top", type=int, default=5, help="how many top tokens to show [5]")
    intervene.set_defaults(func=cmd_intervene)

    from .training.cli import add_train_parser

    add_train_parser(sub)

    from .models.gguf import add_convert_gguf_parser

    add_convert_gguf_parser(sub)

    zoo = sub.add_parser("zoo", help="the shipped models and transcoders")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    rebuild = zoo_sub.add_parser("rebuild", help="regenerate a shipped entry from scratch on this machine")
    rebuild.add_argument("name", help="zoo entry (toyworld)")
    rebuild.add_argument("--out", default=None, help="write here instead of the installed package's zoo")
    rebuild.add_argument("--seed", type=int, default=0)
    rebuild.add_argument("--no-progress", action="store_true")
    rebuild.set_defaults(func=cmd_zoo)

    demo = sub.add_parser("demo", help="trace the two-hop prompt on the built-in demo model")
    demo.add_argument("--out-dir", default="circuit-atlas-demo", help="where to write the demo's files")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads crawl on busy small machines
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"circuit-atlas: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
