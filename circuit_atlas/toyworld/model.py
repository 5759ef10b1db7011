"""Train the toy world's `LlamaForCausalLM` on the corpus.

Each document (one sentence or chain) is one training sequence: <bos> tokens <eos>, right-padded
within the batch; the loss covers every real token after <bos>. AdamW, linear warm-up then cosine
decay. Seeds fix the initialisation and the batch order, so a run is reproducible on one machine
(bit-exactness across machines and thread counts is not promised).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch


@dataclass
class ModelConfig:
    """Architecture and optimisation settings of the toy-world model."""

    n_layers: int = 4
    """Number of transformer blocks."""
    d_model: int = 128
    """Residual stream width."""
    n_heads: int = 4
    """Attention heads per layer (no grouped-query sharing)."""
    d_mlp: int = 512
    """Hidden width of each gated MLP."""
    max_len: int = 32
    """Longest training sequence in tokens (documents are cut there); also the position limit."""
    steps: int = 2500
    """Optimizer steps."""
    batch_size: int = 64
    """Documents per step."""
    lr: float = 3e-3
    """Peak learning rate."""
    min_lr_frac: float = 0.1
    """Final learning rate as a fraction of the peak (cosine decay)."""
    warmup: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 1.0
    """AdamW (decoupled) weight decay, not applied to norm gains. Strong on purpose: it makes the
    memorised per-city two-hop shortcut decay in favour of the shared city -> region -> capital
    path (held-out two-hop 73 % at 0.05, 86 % at 0.3, 97-99 % at 0.6-1.0 after 2,000 steps)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    curriculum_steps: int = 0
    """Steps at the start that see only the one-hop / multilingual / filler part of the corpus
    (no two-hop sentences, no chains); the full mix follows."""
    seed: int = 0
    """Seed for initialisation and batch order."""
    threads: int = 2
    """torch intra-op threads."""
    length_group: int = 8
    """Batches drawn together and sorted by document length before being split, so that each batch
    holds documents of similar length (less padding, same data distribution overall); 1 = off."""

    def to_json(self) -> dict:
        return asdict(self)


def make_model(cfg: ModelConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    conf = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=max(64, cfg.max_len),
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_bias=False,
        mlp_bias=False,
    )
    return LlamaForCausalLM(conf)


def encode_docs(docs: list[str], tokenizer, max_len: int) -> list[list[int]]:
    enc = tokenizer(docs, add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return [([bos] + ids + [eos])[:max_len] for ids in enc]


def _length_grouped(src: list[list[int]], cfg: ModelConfig, g: torch.Generator) -> list[list[list[int]]]:
    """`cfg.length_group` batches of random documents, grouped by length, in random order."""
    k = max(1, cfg.length_group)
    idx = torch.randint(len(src), (k * cfg.batch_size,), generator=g).tolist()
    docs = sorted((src[i] for i in idx), key=len)
    batches = [docs[j * cfg.batch_size : (j + 1) * cfg.batch_size] for j in range(k)]
    order = torch.randperm(k, generator=g).tolist()
    return [batches[j] for j in order]


def _batch(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    labels = ids.clone()
    for i, s in enumerate(seqs):
        labels[i, len(s) :] = -100
    return ids, labels


def train_model(
    docs: list[str],
    tokenizer,
    cfg: ModelConfig,
    *,
    progress: bool = True,
    callback=None,
    callback_every: int = 0,
    first_docs: list[str] | None = None,
    first_steps: int | None = None,
):
    """Train a fresh model on `docs`; returns (model, info) with info = {seconds, final_loss, ...}.

    Curriculum: if `first_docs` is given, the first `first_steps` steps sample from it instead.
    `callback(step, model)` runs every `callback_every` steps (if both set), e.g. for evaluations.
    """
    from tqdm.auto import tqdm

    torch.set_num_threads(cfg.threads)
    model = make_model(cfg, tokenizer)
    model.train()
    data = encode_docs(docs, tokenizer, cfg.max_len)
    first = encode_docs(first_docs, tokenizer, cfg.max_len) if first_docs else None
    first_steps = cfg.curriculum_steps if first_steps is None else first_steps
    pad = tokenizer.pad_token_id

    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))

    g = torch.Generator().manual_seed(cfg.seed + 1)
    t0 = time.time()
    ema = None
    queue: list = []
    queue_src = None
    bar = tqdm(range(cfg.steps), desc="toyworld", disable=not progress, mininterval=1.0)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        src = first if (first is not None and step < first_steps) else data
        if not queue or src is not queue_src:
            queue = _length_grouped(src, cfg, g)
            queue_src = src
        ids, labels = _batch(queue.pop(), pad)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{ema:.3f}")
        if callback is not None and callback_every and (step + 1) % callback_every == 0 and step + 1 < cfg.steps:
            model.eval()
            callback(step + 1, model)
            model.train()
    model.eval()
    info = {"seconds": time.time() - t0, "final_loss_ema": ema, "n_params": sum(p.numel() for p in model.parameters())}
    return model, info


def save_model(model, tokenizer, out_dir) -> None:
    """`save_pretrained` of model (safetensors) and tokenizer into `out_dir`."""
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
