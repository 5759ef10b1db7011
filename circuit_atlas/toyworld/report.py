"""`python -m circuit_atlas.toyworld.report`: the README's toy-world figures, measured afresh.

1. the model's accuracy on the evaluation sets;
2. PLT against CLT: per-layer FVU and L0, top-1 agreement and KL on held-out text (corpus seed 1,
   never trained on), and the Dallas graph's size and scores;
3. where the state and the answer appear, layer by layer, on "The capital of the state
   containing Dallas is": the residual stream read through the final norm and unembedding
   (rank of " Texas" / " Austin" among all tokens), and the active transcoder feature that
   pushes each token hardest through its decoder (features/describe.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ..features.logit_lens import where_tokens_appear  # noqa: E402

PROMPT = "The capital of the state containing Dallas is"


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    from transformers import AutoModelForCausalLM

    from ..attribution.attribute import attribute
    from ..models.architectures import architecture_for
    from ..replacement_model import ReplacementModel
    from ..training.data import tokenize
    from ..training.metrics import evaluate
    from ..transcoders.io import load_transcoders
    from ..zoo import MODELS, TRANSCODERS, ZOO_DIR
    from .corpus import generate_corpus
    from .evaluate import evaluate_dir

    model_dir = ZOO_DIR / MODELS["toyworld"]
    print("## Model accuracy (greedy, whole answer)\n")
    for name, acc in evaluate_dir(model_dir).items():
        print(f"- {name}: {acc:.3f}")

    print("\n## Transcoders on held-out text (corpus seed 1) and on the Dallas graph\n")
    hf = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    print(
        "| set | FVU per layer | L0 per layer | top-1 agreement | KL | dead | graph features (pruned) | replacement | completeness |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("toyworld-plt", "toyworld-clt"):
        tc = load_transcoders(ZOO_DIR / TRANSCODERS[name])
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        seqs, valid = tokenize(generate_corpus(seed=1, n_sentences=600), tok, seq_len=32, pack=False)
        m = evaluate(hf, architecture_for(hf.config.model_type), tc, seqs, valid)
        model = ReplacementModel.from_pretrained("toyworld", name)
        graph = attribute(model, PROMPT, progress=False)
        pruned = graph.prune()
        s = pruned.scores()
        fvu = " / ".join(f"{x:.3f}" for x in m["fvu"])
        l0 = " / ".join(f"{x:.1f}" for x in m["l0"])
        print(
            f"| {name} | {fvu} | {l0} | {m['top1_agreement']:.3f} | {m['kl']:.3f} | {m['dead_fraction_mean']:.3f} "
            f"| {graph.count('feature')} ({pruned.count('feature')}) | {s['replacement']:.3f} | {s['completeness']:.3f} |"
        )

    model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    ids = model.tokenize(PROMPT)
    pieces = model.tokenizer.convert_ids_to_tokens(ids.tolist())
    positions = {"Dallas (last piece)": len(pieces) - 2, "is": len(pieces) - 1}
    print(f"\n## Where Texas and Austin appear (CLT; prompt tokens {pieces})\n")
    print(markdown(where_tokens_appear(model, PROMPT, [" Texas", " Austin"], positions)))


if __name__ == "__main__":
    main()
