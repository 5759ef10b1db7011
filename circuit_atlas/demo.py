"""`circuit-atlas demo`: trace the two-hop prompt end to end on a model made on the spot.

Until the trained toy world ships (a model and transcoders in which Dallas -> Texas ->
Austin really is computed), the demo builds a small *random* Llama, a word-level tokenizer
and calibrated random transcoders, saves them like a user's own files, and runs the same
path a user's model takes: load from disk, attribute, prune, score, save, export. The
graph is real and exact; the features just mean nothing yet.
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


def run_demo(out: Path) -> int:
    from .attribution.attribute import attribute
    from .graph.export import write_graph_files
    from .replacement_model import ReplacementModel
    from .summary import summarize
    from .transcoders.io import save_transcoders
    from .transcoders.random import calibrate_thresholds, random_transcoders

    out.mkdir(parents=True, exist_ok=True)
    print("circuit-atlas demo: random stand-in model (the trained toy world replaces it in a later release)")
    model_dir = _build_model(out)
    tc = random_transcoders("clt", 4, 64, 512, activation="jumprelu", seed=0)
    probe = ReplacementModel.from_pretrained(model_dir, tc)
    inputs = [x[1:] for x in probe.run(probe.tokenize(PROMPT)).feature_inputs]  # BOS carries no features
    calibrate_thresholds(tc, inputs, target_l0=24)
    tc_dir = out / "transcoders"
    save_transcoders(tc, tc_dir)

    model = ReplacementModel.from_pretrained(model_dir, tc_dir)
    graph = attribute(model, PROMPT, max_n_logits=5)
    graph_path = out / "graph.safetensors"
    graph.save(str(graph_path))
    pruned = graph.prune()
    print(summarize(graph, pruned, top_nodes=8, model=model))
    json_path = write_graph_files(graph, out / "graphs", "demo-two-hop")
    print(f"graph: {graph_path}\nviewer JSON: {json_path}")
    return 0
