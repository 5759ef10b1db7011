"""Greedy whole-answer accuracy of a toy-world model on the evaluation prompt sets.

A prompt counts as correct when greedy decoding from it reproduces every token of the answer.
That is computed in one teacher-forced forward of prompt + answer: greedy decoding yields the
answer exactly when, at each answer position, the argmax of the logits is the next answer token.
"""

from __future__ import annotations

import json
import os

import torch


def answer_ids(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids with BOS, answer ids), split so that prompt + answer tokenizes as in running text."""
    p = tokenizer.encode(prompt, add_special_tokens=False)
    full = tokenizer.encode(prompt + answer, add_special_tokens=False)
    if full[: len(p)] != p:  # merges across the boundary: fall back to separate encodings
        full = p + tokenizer.encode(answer, add_special_tokens=False)
    return [tokenizer.bos_token_id] + p, full[len(p) :]


@torch.no_grad()
def correct_mask(model, tokenizer, items: list[tuple[str, str]], batch_size: int = 256) -> list[bool]:
    """For each (prompt, answer): does greedy decoding produce the whole answer?"""
    model.eval()
    out: list[bool] = []
    dev = next(model.parameters()).device
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        seqs, spans = [], []
        for prompt, answer in chunk:
            p, a = answer_ids(tokenizer, prompt, answer)
            seqs.append(p + a)
            spans.append((len(p), len(a)))
        T = max(len(s) for s in seqs)
        pad = tokenizer.pad_token_id
        ids = torch.full((len(seqs), T), pad, dtype=torch.long)
        for j, s in enumerate(seqs):
            ids[j, : len(s)] = torch.tensor(s)
        logits = model(input_ids=ids.to(dev)).logits  # right padding: causal attention ignores it
        pred = logits.argmax(-1).cpu()
        for j, (lp, la) in enumerate(spans):
            target = ids[j, lp : lp + la]
            guess = pred[j, lp - 1 : lp - 1 + la]
            out.append(bool(torch.equal(target, guess)))
    return out


def evaluate(model, tokenizer, sets: dict[str, list[tuple[str, str]]]) -> dict[str, float]:
    """Accuracy (0..1) per evaluation set."""
    return {
        name: sum(m) / max(1, len(m)) for name, m in ((n, correct_mask(model, tokenizer, s)) for n, s in sets.items())
    }


def failures(model, tokenizer, items: list[tuple[str, str]], limit: int = 20) -> list[tuple[str, str, str]]:
    """(prompt, expected answer, greedy continuation) for the prompts the model gets wrong."""
    bad = [it for it, ok in zip(items, correct_mask(model, tokenizer, items)) if not ok][:limit]
    out = []
    for prompt, answer in bad:
        p, a = answer_ids(tokenizer, prompt, answer)
        ids = torch.tensor([p])
        with torch.no_grad():
            for _ in range(len(a)):
                nxt = model(input_ids=ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        out.append((prompt, answer, tokenizer.decode(ids[0, len(p) :])))
    return out


def write_metrics(out_dir, metrics: dict) -> str:
    path = os.path.join(str(out_dir), "metrics.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2, ensure_ascii=False)
    return path


def evaluate_dir(model_dir, seed: int = 0) -> dict[str, float]:
    """Load a saved toy-world model and evaluate it on the eval sets of `seed`."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from .corpus import eval_sets

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = LlamaForCausalLM.from_pretrained(str(model_dir))
    return evaluate(model, tok, eval_sets(seed))
