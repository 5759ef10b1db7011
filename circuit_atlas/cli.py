"""Command line: circuit-atlas trace | trace-batch | export | intervene | estimate | train-transcoders | zoo | demo.

Each subcommand is one `add_<name>_parser(subparsers)` function listed in COMMANDS; a command whose
options need heavy imports (torch) goes in LAZY_COMMANDS, so `--help` and other commands start fast.
Only argparse is imported at module level: torch, transformers and pandas load inside the command
that runs (`python -X importtime -m circuit_atlas --help` shows it).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
import time
from pathlib import Path

DTYPES = {"float32": "float32", "fp32": "float32", "float64": "float64", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}  # fmt: skip
SHIPPED_MODELS = "shipped: toyworld; `circuit-atlas zoo list` shows them"
SHIPPED_TRANSCODERS = "shipped: toyworld-clt, toyworld-plt"
MODES = ("free", "frozen_attention", "constrained")


def _status(message: str) -> None:
    """One line of progress on stderr, so no phase is silent (stdout keeps the results)."""
    print(message, file=sys.stderr, flush=True)


# --- shared options ------------------------------------------------------------------------------
def _add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, help=f"local Hugging Face model directory ({SHIPPED_MODELS})")
    p.add_argument(
        "--transcoders",
        required=required,
        help=f"transcoder directory: circuit-tracer, GemmaScope .npz or ours ({SHIPPED_TRANSCODERS})",
    )
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="compute dtype [float32]")
    p.add_argument("--device", default=None, help="torch device [cpu]")
    p.add_argument(
        "--allow-model-mismatch",
        action="store_true",
        help="use transcoders recorded as trained on another model, or that reconstruct this one badly",
    )


def _load_model(args):
    import torch

    from .replacement_model import ReplacementModel

    t = time.perf_counter()
    model = ReplacementModel.from_pretrained(
        args.model, args.transcoders, dtype=getattr(torch, DTYPES[args.dtype]), device=args.device,
        allow_model_mismatch=args.allow_model_mismatch,
    )  # fmt: skip
    _status(f"loaded {args.model} with {args.transcoders} in {time.perf_counter() - t:.1f} s")
    return model


def _config_type(f: dataclasses.Field):
    text = str(f.type)
    return int if "int" in text else float if "float" in text else str


def add_config_arguments(p: argparse.ArgumentParser, config_class, docs: dict[str, str], title: str) -> None:
    """One --flag per dataclass field (--max-feature-nodes for max_feature_nodes), its docstring the help."""
    group = p.add_argument_group(title)
    for f in dataclasses.fields(config_class):
        doc = docs.get(f.name, "")
        shown = doc if doc.rstrip(". ").endswith("]") else f"{doc} [{f.default}]"
        group.add_argument("--" + f.name.replace("_", "-"), type=_config_type(f), default=f.default,
                           help=shown.replace("%", "%%"))  # fmt: skip


def config_from_args(config_class, args: argparse.Namespace):
    """The dataclass from parsed flags; its __post_init__ gives the one clear error for a bad value."""
    return config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)})


# --- trace ---------------------------------------------------------------------------------------
def _text_target(value: str) -> tuple[str, str]:
    return ("text", value)


def _id_target(value: str) -> tuple[str, int]:
    try:
        return ("id", int(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--target-id takes a token id (an integer), got {value!r}") from None


def parse_targets(values) -> list | None:
    """[("text", " Austin"), ("id", 1234)] -> [" Austin", 1234]: text stays text, even "1"."""
    if not values:
        return None
    return [v for _, v in values]


def add_trace_parser(sub) -> None:
    from .attribution.config import AttributionConfig, field_docs

    p = sub.add_parser(
        "trace",
        help="compute, save and summarise an attribution graph",
        description="Compute the attribution graph of a prompt, save it, and print a one-screen summary. "
        "Before attributing, memory and time are estimated; a graph that would not fit is refused with the fix.",
    )
    _add_model_args(p)
    p.add_argument("--prompt", required=True, help="text to attribute (BOS is prepended)")
    p.add_argument("--out", required=True, help="graph file to write (.safetensors)")
    p.add_argument(
        "--target", dest="targets", action="append", type=_text_target, metavar="TEXT",
        help="explain this token instead of the top logits: its text, one token (mind the leading space: "
        "--target ' Austin'; --target 1 is the text '1'); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--target-id", dest="targets", action="append", type=_id_target, metavar="ID",
        help="explain this token, given by its vocabulary id; repeatable, mixes with --target",
    )  # fmt: skip
    p.add_argument("--node-threshold", type=float, default=0.8, help="pruning: influence share of kept nodes [0.8]")
    p.add_argument("--edge-threshold", type=float, default=0.98, help="pruning: score share of kept edges [0.98]")
    p.add_argument("--json-dir", default=None, help="also write viewer JSON (circuit-tracer/Neuronpedia format) here")
    p.add_argument("--slug", default=None, help="name of the graph in --json-dir [file stem of --out]")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_config_arguments(p, AttributionConfig, field_docs(), "attribution settings (AttributionConfig)")
    p.set_defaults(func=cmd_trace)


def run_trace(model, args) -> int:
    from .attribution.attribute import attribute
    from .attribution.budget import check_attribution_budget, memory_budget
    from .attribution.config import AttributionConfig
    from .summary import summarize

    config = config_from_args(AttributionConfig, args)
    targets = parse_targets(args.targets)
    est = check_attribution_budget(model, args.prompt, **config.attribute_kwargs(),
                                   memory_budget_gb=config.memory_budget_gb)  # fmt: skip
    _status(f"estimate: {est.describe()}")
    with memory_budget(config.memory_budget_gb):
        graph = attribute(model, args.prompt, targets=targets, progress=not args.no_progress,
                          **config.attribute_kwargs())  # fmt: skip
    _status(f"attribution done in {graph.metadata['attribution_seconds']:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _status(f"saving the graph to {out} ...")
    t = time.perf_counter()
    graph.save(str(out))
    _status(f"saved ({out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t:.1f} s); pruning and scoring ...")
    t = time.perf_counter()
    pruned = graph.prune(node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    text = summarize(graph, pruned, top_nodes=10, model=model)
    _status(f"pruned and scored in {time.perf_counter() - t:.1f} s")
    print(text)
    print(f"graph written to {out}  ({graph.metadata['attribution_seconds']:.2f} s attribution)")
    if args.json_dir:
        from .graph.export import write_graph_files

        _status("writing viewer JSON ...")
        slug = args.slug or out.stem
        path = write_graph_files(graph, args.json_dir, slug, node_threshold=args.node_threshold,
                                 edge_threshold=args.edge_threshold)  # fmt: skip
        print(f"viewer JSON written to {path}")
    return 0


def cmd_trace(args) -> int:
    from .attribution.config import AttributionConfig

    config_from_args(AttributionConfig, args)  # a bad setting fails before the model loads
    return run_trace(_load_model(args), args)


# --- estimate ------------------------------------------------------------------------------------
def add_estimate_parser(sub) -> None:
    from .attribution.config import AttributionConfig, field_docs

    p = sub.add_parser(
        "estimate",
        help="estimate the memory and time of an attribution graph without computing it",
        description="Load the model and transcoders, count the active features of a prompt (given, or --tokens "
        "random tokens), and print the estimated graph size (edges, exact for a full graph), peak memory and "
        "time, against this machine's RAM. Or, without weights: --config (a model's HF config.json) with "
        "--width and --l0 of its transcoders and --tokens, assuming L0 active features per layer and token.",
    )
    _add_model_args(p, required=False)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--tokens", type=int, help="prompt length in tokens, BOS included (random tokens are used)")
    what.add_argument("--prompt", help="estimate for this prompt")
    shapes = p.add_argument_group("from shapes only (no weights: instead of --model and --transcoders)")
    shapes.add_argument("--config", help="the model's Hugging Face config.json")
    shapes.add_argument("--width", type=int, help="transcoder features per layer")
    shapes.add_argument("--l0", type=float, help="active features per layer and token (e.g. GemmaScope's L0)")
    shapes.add_argument("--kind", choices=["plt", "clt"], default="plt", help="transcoder kind [plt]")
    shapes.add_argument("--skip", action="store_true", help="the transcoders have a skip connection (d x d)")
    p.add_argument("--kept-fraction", type=float, help="with --edge-budget: assume each row keeps this share of "
                   "its cone [the guaranteed bound: at most 1/edge_budget edges a row]")  # fmt: skip
    add_config_arguments(p, AttributionConfig, field_docs(), "attribution settings (AttributionConfig)")
    p.set_defaults(func=cmd_estimate)


def _estimate_from_config(args, config) -> int:
    import json

    from .attribution.estimate import matmul_throughput, shape_from_config

    if args.model or args.transcoders or args.prompt is not None:
        raise ValueError("--config estimates from shapes alone: give --tokens, not --prompt/--model/--transcoders")
    if args.width is None or args.l0 is None:
        raise ValueError("--config needs --width (transcoder features per layer) and --l0 (active per token)")
    try:
        hf_config = json.loads(Path(args.config).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the model config {args.config!r} (an HF config.json): {err}") from None
    dtype = DTYPES[args.dtype]
    shape = shape_from_config(hf_config, args.width, args.l0, args.tokens, kind=args.kind, skip=args.skip,
                              dtype=dtype, n_logits=config.max_n_logits)  # fmt: skip
    print(f"assuming {args.l0:g} active features per layer and token (position >= 1), {args.width:,} features "
          f"per layer ({args.kind.upper()}), {config.max_n_logits} logit targets, {dtype}, this CPU's speed")  # fmt: skip
    return _print_estimate(shape, config, matmul_throughput(), args.kept_fraction)


def _print_estimate(shape, config, throughput: float, kept_fraction: float | None = None) -> int:
    """Print the estimate and the budget; exit status 1 when attribution would refuse it."""
    from .attribution.budget import available_bytes, budget_bytes, refusal
    from .attribution.estimate import GB, estimate_shape

    est = estimate_shape(shape, config, throughput, kept_fraction=kept_fraction)
    budget = budget_bytes(config.memory_budget_gb)
    print(f"estimate: {est.describe()}")
    print(f"memory budget {budget / GB:.1f} GB; available RAM now {available_bytes() / GB:.1f} GB")
    if est.peak_bytes > budget:
        print(f"would be refused: {refusal(shape, est, budget, config, throughput)}")
        return 1
    print("fits")
    return 0


def cmd_estimate(args) -> int:
    from .attribution.config import AttributionConfig
    from .attribution.estimate import matmul_throughput, shape_of_prompt

    config = config_from_args(AttributionConfig, args)
    if args.tokens is not None and args.tokens < 2:
        raise ValueError(f"--tokens must be at least 2 (BOS and one token), got {args.tokens}")
    if args.config is not None:
        return _estimate_from_config(args, config)
    if not args.model or not args.transcoders:
        raise ValueError("estimate needs --model and --transcoders (or --config, --width and --l0 for shapes only)")
    model = _load_model(args)
    if args.prompt is not None:
        prompt = model.tokenize(args.prompt)
    else:
        import torch

        generator = torch.Generator().manual_seed(0)
        special = set(model.tokenizer.all_special_ids)
        ids = torch.randint(0, model.vocab_size, (args.tokens * 2,), generator=generator).tolist()
        prompt = torch.tensor([model.bos_id()] + [i for i in ids if i not in special][: args.tokens - 1])
    shape = shape_of_prompt(model, prompt, config)
    return _print_estimate(shape, config, matmul_throughput(model.device), args.kept_fraction)


# --- export --------------------------------------------------------------------------------------
def add_export_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a saved graph as circuit-tracer / Neuronpedia viewer JSON",
        description="Read a graph file written by `trace` (or Graph.save), prune it, and write the viewer JSON "
        "(circuit-tracer / Neuronpedia format) into a directory, with its graph-metadata.json index.",
    )
    p.add_argument("graph", help="graph file to read (.safetensors)")
    p.add_argument("--json-dir", required=True, help="directory to write the viewer JSON into")
    p.add_argument("--slug", default=None, help="name of the graph in the directory [file stem of GRAPH]")
    p.add_argument("--node-threshold", type=float, default=0.8, help="pruning: influence share of kept nodes [0.8]")
    p.add_argument("--edge-threshold", type=float, default=0.98, help="pruning: score share of kept edges [0.98]")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from .graph import Graph
    from .graph.export import write_graph_files

    graph = Graph.load(args.graph)
    path = write_graph_files(graph, args.json_dir, args.slug or Path(args.graph).stem,
                             node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)  # fmt: skip
    print(f"viewer JSON written to {path}")
    return 0


# --- intervene -----------------------------------------------------------------------------------
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

    from .display import display_token

    probs = torch.softmax(logits.double(), -1)
    top = probs.topk(k)
    return [f"{display_token(model.tokenizer, int(i))} {100 * float(p):.1f}%" for p, i in zip(top.values, top.indices)]


def add_intervene_parser(sub) -> None:
    p = sub.add_parser(
        "intervene",
        help="set or scale features and compare the top logits (and generations)",
        description="Run the prompt with transcoder features set or scaled, and print the top tokens before and "
        "after (and, with --generate, the continuations). Features are LAYER:POSITION:FEATURE.",
    )
    _add_model_args(p)
    p.add_argument("--prompt", required=True, help="text to run (BOS is prepended)")
    p.add_argument(
        "--set", action="append", metavar="L:P:F=V",
        help="set feature F of layer L at position P to activation V (P: an int, negative from the end, 'all', "
        "or '5+' for 5 onwards); repeatable",
    )  # fmt: skip
    p.add_argument("--scale", action="append", metavar="L:P:F=K", help="multiply that feature's activation by K")
    p.add_argument(
        "--mode", choices=MODES, default="frozen_attention",
        help="free: attention, norms and MLPs respond; frozen_attention: the prompt's attention patterns held "
        "(circuit-tracer's default); constrained: attention frozen and MLPs held, direct effects only "
        "[frozen_attention]",
    )  # fmt: skip
    p.add_argument("--constrain-layers", default=None, help="with --mode constrained: comma-separated layers [all]")
    p.add_argument("--generate", type=int, default=0, metavar="N", help="also generate N tokens before and after")
    p.add_argument("--top", type=int, default=5, help="how many top tokens to show [5]")
    p.set_defaults(func=cmd_intervene)


def cmd_intervene(args) -> int:
    import warnings

    from .interventions import constrained

    interventions = [parse_intervention(s, "set") for s in args.set or []]
    interventions += [parse_intervention(s, "scale") for s in args.scale or []]
    if not interventions:
        raise ValueError("give at least one --set or --scale intervention")
    mode = args.mode
    if args.constrain_layers is not None:
        if mode != "constrained":
            raise ValueError("--constrain-layers goes with --mode constrained")
        mode = constrained(int(x) for x in args.constrain_layers.split(","))
    model = _load_model(args)
    before = model.intervene(args.prompt, [], mode=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the notes are printed below, once
        result = model.intervene(args.prompt, interventions, mode=mode)
    shown = args.mode + (f" (layers {args.constrain_layers})" if args.constrain_layers else "")
    print(f"prompt: {args.prompt!r}  mode: {shown}")
    b_top, a_top = _top(model, before.logits[-1], args.top), _top(model, result.logits[-1], args.top)
    width = max(len(x) for x in b_top)
    print(f"{'before':{width}s}   after")
    for b, a in zip(b_top, a_top):
        print(f"{b:{width}s}   {a}")
    for note in result.notes:
        print(f"note: {note}")
    if args.generate:
        plain = model.generate(args.prompt, [], max_new_tokens=args.generate, mode=mode).text
        steered = model.generate(args.prompt, interventions, max_new_tokens=args.generate, mode=mode).text
        print(f"generated before: {plain!r}\ngenerated after:  {steered!r}")
    return 0


# --- zoo and demo --------------------------------------------------------------------------------
def add_zoo_parser(sub) -> None:
    zoo = sub.add_parser("zoo", help="the shipped models and transcoders", description="The shipped models and "
                         "transcoder sets: list them, or rebuild one from scratch.")  # fmt: skip
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    listing = zoo_sub.add_parser("list", help="what is shipped, where it lies, and the names to load it by")
    listing.set_defaults(func=cmd_zoo_list)
    rebuild = zoo_sub.add_parser("rebuild", help="regenerate a shipped entry from scratch on this machine")
    rebuild.add_argument("name", help="zoo entry (toyworld)")
    rebuild.add_argument("--out", default=None, help="write here instead of the installed package's zoo")
    rebuild.add_argument("--seed", type=int, default=0, help="seed of corpus, model and transcoders [0]")
    rebuild.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    rebuild.set_defaults(func=cmd_zoo)


def cmd_zoo_list(args) -> int:
    from .zoo import describe_zoo

    print(describe_zoo())
    return 0


def cmd_zoo(args) -> int:
    from .zoo.rebuild import rebuild_toyworld

    if args.name != "toyworld":
        raise ValueError(f"unknown zoo entry {args.name!r}; the zoo has: toyworld")
    rebuild_toyworld(args.out, seed=args.seed, progress=not args.no_progress)
    return 0


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="trace the two-hop prompt on the built-in demo model")
    p.add_argument(
        "--out-dir", default="circuit-atlas-demo", help="where to write the demo's files [circuit-atlas-demo]"
    )
    p.add_argument("--no-serve", action="store_true", help="import the graph but do not start the server (scripts, CI)")
    p.add_argument("--port", type=int, default=8765, help="port of the graph server the demo ends with [8765]")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out_dir), serve=not args.no_serve, port=args.port)


# --- the parser ----------------------------------------------------------------------------------
COMMANDS = [add_trace_parser, add_export_parser, add_intervene_parser, add_estimate_parser, add_zoo_parser,
            add_demo_parser]  # fmt: skip
# name -> (module:function registering it, one-line help): imported only when that command runs.
LAZY_COMMANDS = {
    "trace-batch": (
        "circuit_atlas.attribution.batch:add_parser",
        "trace one graph per prompt of a file (resumable; many GPUs under torchrun)",
    ),
    "train-transcoders": ("circuit_atlas.training.cli:add_train_parser", "train PLT / CLT transcoders for a model"),
    "serve": ("circuit_atlas.server.cli:add_parser", "run the graph server and viewer (a library of graphs)"),
    "features": (
        "circuit_atlas.features.dashboards.cli:add_parser",
        "build, show, search and export feature dashboards",
    ),
    "convert-gguf": (
        "circuit_atlas.models.gguf:add_convert_gguf_parser",
        "convert a GGUF file to a Hugging Face folder",
    ),
    "experiments": (
        "circuit_atlas.toyworld.experiments:add_parser",
        "measure how often the toy world's intervention experiments generalise",
    ),
}


def _requested(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; a lazy command gets its full options only when `argv` asks for it."""
    parser = argparse.ArgumentParser(prog="circuit-atlas", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log phase timings")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in COMMANDS:
        register(sub)
    requested = _requested(sys.argv[1:] if argv is None else argv)
    for name, (target, help_text) in LAZY_COMMANDS.items():
        if requested == name:
            module, function = target.split(":")
            getattr(importlib.import_module(module), function)(sub)
        else:
            sub.add_parser(name, help=help_text, description=f"{help_text} (`circuit-atlas {name} --help`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads crawl on busy small machines
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, MemoryError) as e:
        print(f"circuit-atlas: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
