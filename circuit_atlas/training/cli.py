"""`circuit-atlas train-transcoders` (also `python -m circuit_atlas.training`).

Every TrainConfig field is a flag (--batch-tokens for batch_tokens), its docstring the help text.
Under `torchrun --nproc_per_node N` the same command trains data-parallel.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import logging
import os
import sys
import textwrap
import warnings
from functools import cache
from pathlib import Path

from ..transcoders.transcoder import INPUT_HOOKS, OUTPUT_HOOKS
from .checkpoint import STATE_JSON
from .config import KINDS, PENALIZED, TRAIN_ACTIVATIONS, TrainConfig
from .metrics import TrainingQualityWarning


@cache
def field_docs() -> dict[str, str]:
    """The docstring under each TrainConfig field, read from the source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(TrainConfig)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in itertools.pairwise(body):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = str(nxt.value.value)
    return docs


def _field_type(f: dataclasses.Field):
    text = str(f.type)
    if "bool" in text:
        return bool
    if "int" in text:
        return int
    if "float" in text:
        return float
    return str


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="local Hugging Face causal-LM directory")
    p.add_argument("--data", required=True, help="training text: a .txt / .jsonl file or a directory of them")
    p.add_argument("--out", required=True, help="directory to write the transcoder set and metrics.json to")
    p.add_argument("--eval-data", default=None, help="held-out text for the metrics [the tail of --data]")
    p.add_argument("--checkpoint-dir", default=None, help="where checkpoints go [<out>.checkpoint]")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint (its settings must match)")
    p.add_argument("--force", action="store_true", help="replace a transcoder set already at --out")
    p.add_argument("--stop-at-step", type=int, default=None, help="checkpoint and exit after this step")
    p.add_argument("--device", default=None, help="torch device [cpu; cuda:LOCAL_RANK under torchrun]")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    docs = field_docs()
    choices = {"kind": KINDS, "activation": TRAIN_ACTIVATIONS, "input_hook": INPUT_HOOKS, "output_hook": OUTPUT_HOOKS}
    group = p.add_argument_group("training settings (TrainConfig)")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        doc = docs.get(f.name, "")
        help_text = (doc if doc.rstrip(". ").endswith("]") else f"{doc} [{f.default}]").replace("%", "%%")
        if _field_type(f) is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=doc)
        else:
            group.add_argument(flag, type=_field_type(f), default=f.default, help=help_text,
                               choices=choices.get(f.name))  # fmt: skip


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "extra"}
    return TrainConfig(**values)


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import METRICS_FILE, default_checkpoint_dir, train_transcoders

    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    config = config_from_args(args)
    try:
        with warnings.catch_warnings():  # printed below, after the metrics they are about
            warnings.simplefilter("ignore", TrainingQualityWarning)
            result = train_transcoders(
                args.model, args.data, args.out, config, eval_data=args.eval_data,
                checkpoint_dir=args.checkpoint_dir, resume=args.resume, force=args.force,
                stop_at_step=args.stop_at_step, progress=not args.no_progress, device=args.device,
            )  # fmt: skip
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training steps
        ckpt = Path(args.checkpoint_dir or default_checkpoint_dir(Path(args.out).expanduser()))
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"circuit-atlas: interrupted; {_checkpoint_note(ckpt)}", file=sys.stderr)
        return 130
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if result.interrupted:
        if rank0:
            print(f"circuit-atlas: interrupted at step {result.step} of {config.steps}; checkpoint saved to "
                  f"{result.checkpoint}: run the same command with --resume to continue", file=sys.stderr)  # fmt: skip
        return 130
    if result.path is not None:
        print(summarize(result.metrics, config))
        print(f"transcoders and {METRICS_FILE} written to {result.path} ({result.seconds:.1f} s)")
        for text in result.metrics.get("warnings", []):
            print(f"circuit-atlas: warning: {text}", file=sys.stderr)
    elif rank0:
        print(f"stopped at step {result.step}; continue with --resume")
    return 0


def summarize(metrics: dict, config: TrainConfig) -> str:
    """The final metrics in one line."""
    if "fvu_mean" not in metrics:
        return "no held-out text to measure the set on (eval_tokens = 0)"
    asked = config.target_l0 if config.activation in PENALIZED else config.k
    per_layer = " / ".join(f"{v:.3f}" for v in metrics["fvu"])
    return (f"FVU {metrics['fvu_mean']:.3f} (per layer {per_layer}), L0 {metrics['l0_mean']:.1f} per token and layer"
            + (f" (asked {asked:g})" if asked is not None else "")
            + f", dead features {metrics['dead_fraction_mean']:.1%}; replacement model: top-1 agreement "
            f"{metrics['top1_agreement']:.1%}, KL {metrics['kl']:.3f} nats; {metrics['train_seconds']:.1f} s of training")  # fmt: skip


def _checkpoint_note(ckpt: Path) -> str:
    """What an interrupted run leaves behind, and how to go on."""
    try:
        step = json.loads((ckpt / STATE_JSON).read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return "nothing was saved (no checkpoint had been written yet)"
    return f"the checkpoint at {ckpt} (step {step}) is kept: run the same command with --resume to continue from it"


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register `train-transcoders` on a subparsers object (the main CLI's)."""
    p = subparsers.add_parser(
        "train-transcoders", help="train PLT / CLT transcoders for a model",
        description="Train transcoders on activations harvested on the fly; torchrun runs it data-parallel.",
    )  # fmt: skip
    add_arguments(p)
    p.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(prog="python -m circuit_atlas.training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return cmd_train(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"circuit-atlas: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
