"""`circuit-atlas demo`: trace "The capital of the state containing Dallas is" end to end.

On the shipped toy world (circuit_atlas/zoo/toyworld: a model trained here on a synthetic
world in which Dallas -> Texas -> Austin is computed, with its cross-layer transcoders).
If the toy world is missing from the installation, the demo falls back to a small *random*
Llama with calibrated random transcoders, saved and reloaded like a user's own files: the
graph is still exact, its features just mean nothing.

It ends by importing the graph into a graph library (out/server-data) and serving it on
127.0.0.1 (`--no-serve`: import only, then exit; for scripts and CI).
"""

from __future__ import annotations

from pathlib import Path

import torch

PROMPT = "The capital of the state containing Dallas is"
WORDS = (
    "the capital of state containing dallas is austin texas city country province california sacramento "
    "oakland china beijing shanghai opposite small big"
).split()


def _build_model(out: Path) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<bos>", "<eos>", "<unk>"] + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(config)
    model_dir = out / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def _random_stand_in(out: Path):
    from .replacement_model import ReplacementModel
    from .transcoders.io import save_transcoders
    from .transcoders.random import calibrate_thresholds, random_transcoders

    print("circuit-atlas demo: the toy world is not installed; using a random stand-in model")
    model_dir = _build_model(out)
    tc = random_transcoders("clt", 4, 64, 512, activation="jumprelu", seed=0)
    probe = ReplacementModel.from_pretrained(model_dir, tc)
    inputs = [x[1:] for x in probe.run(probe.tokenize(PROMPT)).feature_inputs]  # BOS carries no features
    calibrate_thresholds(tc, inputs, target_l0=24)
    tc_dir = out / "transcoders"
    save_transcoders(tc, tc_dir)

    return ReplacementModel.from_pretrained(model_dir, tc_dir)


def _library(graph, out: Path, port: int):
    """Import the demo graph into a graph library under out/server-data (once; re-runs reuse it)."""
    from sqlalchemy import select

    from .server.app import create_app
    from .server.config import ServerConfig
    from .server.db import GraphRow

    app = create_app(ServerConfig(data=str(out / "server-data"), port=port))
    with app.state.sessions() as session:  # a re-run finds the graph an earlier run imported
        earlier = session.scalars(
            select(GraphRow).where(GraphRow.name == "demo-two-hop", GraphRow.source == "demo")
        ).first()
        if earlier is not None:
            return app, earlier.id
        entry = app.state.store(graph, "demo-two-hop", ["demo"], "demo", session)
    return app, entry["id"]


def run_demo(out: Path, serve: bool = False, port: int = 8765) -> int:
    from .attribution.attribute import attribute
    from .graph.export import write_graph_files
    from .replacement_model import ReplacementModel
    from .summary import summarize
    from .zoo import MODELS, TRANSCODERS, ZOO_DIR

    out.mkdir(parents=True, exist_ok=True)
    if (ZOO_DIR / MODELS["toyworld"]).is_dir() and (ZOO_DIR / TRANSCODERS["toyworld-clt"]).is_dir():
        print("circuit-atlas demo: the toy world (shipped model + cross-layer transcoders)")
        model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    else:
        model = _random_stand_in(out)
    graph = attribute(model, PROMPT, max_n_logits=5)
    graph_path = out / "graph.safetensors"
    graph.save(str(graph_path))
    pruned = graph.prune()
    print(summarize(graph, pruned, top_nodes=8, model=model))
    json_path = write_graph_files(graph, out / "graphs", "demo-two-hop")
    print(f"graph: {graph_path}\nviewer JSON: {json_path}")
    app, gid = _library(graph, out, port)
    data = app.state.config.data_dir
    if not serve:
        print(f"graph library: {data} (graph {gid}); browse it with: circuit-atlas serve --data {data}")
        return 0
    import uvicorn

    print(f"circuit-atlas demo: graph server on http://127.0.0.1:{port}/graphs/{gid}  (Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    return 0
