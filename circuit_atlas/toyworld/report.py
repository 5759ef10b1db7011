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

import torch  # noqa: E402

PROMPT = "The capital of the state containing Dallas is"


def _rank(logits: torch.Tensor, token: int) -> int:
    return int((logits > logits[token]).sum()) + 1


@torch.no_grad()
def where_tokens_appear(model, prompt: str, tokens: list[str], positions: dict[str, int]) -> list[dict]:
    """Per layer (after its MLP) and position: lens rank of each token, and its strongest feature."""
    from ..features.describe import decoder_logits, promoted_tokens
    from ..features.logit_lens import token_id
    from ..models.forward import apply_norm, norm_scale

    w, tc = model.weights, model.transcoders
    if (tc.input_hook, tc.output_hook) != ("hook_resid_mid", "hook_mlp_out"):
        raise ValueError("this report reads the residual stream from resid_mid + mlp_out transcoder sites")
    ids = model.tokenize(prompt)
    run = model.run(ids)
    acts = model.activations(ids)
    tids = [token_id(model, t) for t in tokens]
    rows = []
    for l in range(model.n_layers):
        resid = run.feature_inputs[l] + run.mlp_outputs[l]  # residual stream after layer l
        lens = apply_norm(w.final_norm, resid, norm_scale(w.final_norm, resid)) @ w.W_U.T
        row = {"layer": l}
        for group, p in positions.items():
            for t, tid in zip(tokens, tids):
                row[f"rank {t.strip()} @ {group}"] = _rank(lens[p], tid)
        for t, tid in zip(tokens, tids):
            best, best_push = None, 0.0
            for f, a in acts.active(l):
                if f.position in positions.values():
                    logits = decoder_logits(model, l, f.index)
                    push = a * float(logits[tid] - logits.mean())
                    if push > best_push:
                        best, best_push = f, push
            if best is None:
                row[f"top {t.strip()} feature"] = "-"
            else:
                where = [g for g, p in positions.items() if p == best.position][0]
                top = ", ".join(s.strip() for s in promoted_tokens(model, l, best.index, 3))
                row[f"top {t.strip()} feature"] = f"#{best.index} @ {where} (+{best_push:.1f}; {top})"
        rows.append(row)
    return rows


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
    print("| set | FVU per layer | L0 per layer | top-1 agreement | KL | dead | graph features (pruned) | replacement | completeness |")
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
        print(f"| {name} | {fvu} | {l0} | {m['top1_agreement']:.3f} | {m['kl']:.3f} | {m['dead_fraction_mean']:.3f} "
              f"| {graph.count('feature')} ({pruned.count('feature')}) | {s['replacement']:.3f} | {s['completeness']:.3f} |")

    model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    ids = model.tokenize(PROMPT)
    pieces = model.tokenizer.convert_ids_to_tokens(ids.tolist())
    positions = {"Dallas (last piece)": len(pieces) - 2, "is": len(pieces) - 1}
    print(f"\n## Where Texas and Austin appear (CLT; prompt tokens {pieces})\n")
    print(markdown(where_tokens_appear(model, PROMPT, [" Texas", " Austin"], positions)))


if __name__ == "__main__":
    main()
