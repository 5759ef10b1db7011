"""Tiny random Hugging Face models, a local tokenizer and calibrated random transcoders.

Everything here is built offline and deterministically from a seed:

- `tiny_tokenizer()`  a word-level `PreTrainedTokenizerFast` over a fixed vocabulary (~100 tokens),
  which never adds special tokens itself (the engine prepends BOS).
- `tiny_model(arch, seed, vocab_size)` for arch in ARCHS, float32, eager attention, eval mode, with
  large random weights and NON-trivial norm gains / biases.
- `save_tiny(path, arch)` writes model + tokenizer with `save_pretrained`.
- `tiny_transcoders(...)` random PLT/CLT transcoders whose thresholds are calibrated on a prompt
  (float64 oracle forward) so that ~40 % of (feature, position) pairs are active and no
  pre-activation sits within 0.05 std of its threshold.
"""

from __future__ import annotations

import os
import sys

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
if os.path.dirname(_HERE) not in sys.path:  # the repository root, for `circuit_atlas`
    sys.path.append(os.path.dirname(_HERE))

from oracle import F64, OracleModel  # noqa: E402

from circuit_atlas.transcoders import Transcoders  # noqa: E402

ARCHS = ("llama", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2")
PROMPT = "The capital of the state containing Dallas is"

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
WORDS = (
    "The the capital of state containing Dallas is Austin Texas city country France Paris Germany "
    "Berlin Spain Madrid Italy Rome a an and or in on at to from by with for that this which who "
    "what where when why how big small large tiny old new red blue green black white house river "
    "mountain lake sea ocean road car train plane dog cat bird fish tree flower sun moon star day "
    "night year opposite word language English French German said says was were be been has have "
    "largest smallest first last one two three , . ? ! : ' \""
).split()


def tiny_tokenizer():
    """Word-level fast tokenizer; `tokenizer(text)` adds no special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {}
    for w in SPECIALS + WORDS:
        if w not in vocab:
            vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    return fast


def _configure(arch: str, vocab_size: int, tok) -> object:
    import transformers as tf

    common_ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if arch == "llama":
        return tf.LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            attn_implementation="eager",
            **common_ids,
        )
    if arch == "qwen2":
        return tf.Qwen2Config(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            use_sliding_window=False,
            attn_implementation="eager",
            **common_ids,
        )
    if arch == "qwen3":
        return tf.Qwen3Config(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=12,
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            attention_bias=False,
            attn_implementation="eager",
            **common_ids,
        )
    if arch == "gemma2":
        return tf.Gemma2Config(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=12,
            query_pre_attn_scalar=10,
            sliding_window=4,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            hidden_activation="gelu_pytorch_tanh",
            tie_word_embeddings=True,
            attn_implementation="eager",
            **common_ids,
        )
    if arch == "gemma3":
        # Sliding layers 0 and 2 (window 4) and a global layer 1, each type with its own RoPE base
        # (far apart, so a wrong table shows); q/k norms; no soft caps, as in the real Gemma-3.
        return tf.Gemma3TextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=12,
            query_pre_attn_scalar=10,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                "full_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            hidden_activation="gelu_pytorch_tanh",
            tie_word_embeddings=True,
            attn_implementation="eager",
            **common_ids,
        )
    if arch == "gpt2":
        cfg = tf.GPT2Config(
            vocab_size=vocab_size,
            n_embd=32,
            n_layer=3,
            n_head=4,
            n_positions=64,
            n_inner=64,
            activation_function="gelu_new",
            layer_norm_epsilon=1e-5,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
            **common_ids,
        )
        cfg._attn_implementation = "eager"
        return cfg
    raise ValueError(f"unknown tiny architecture {arch!r}")


def tiny_model(arch: str, seed: int = 0, vocab_size: int | None = None, tokenizer=None):
    """A random float32 HF causal LM of architecture `arch` (eval mode, eager attention)."""
    from transformers import AutoModelForCausalLM

    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    V = vocab_size if vocab_size is not None else len(tok)
    cfg = _configure(arch, V, tok)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    gen = torch.Generator().manual_seed(1000 + seed)

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std

    with torch.no_grad():
        for name, p in model.named_parameters():
            short = name.split(".")[-2] if "." in name else name
            is_norm = ("norm" in name) or short.startswith("ln_")
            if is_norm and name.endswith("weight"):
                if arch in ("gemma2", "gemma3"):  # gain = 1 + w
                    p.copy_(normal(p.shape, 0.3))
                else:
                    p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif name.endswith("bias"):
                p.copy_(normal(p.shape, 0.2))
            elif "wte" in name or "embed_tokens" in name:
                # Gemma-2/3 multiply by sqrt(d) and ties the unembedding: keep its logits moderate
                p.copy_(normal(p.shape, 0.25 if arch in ("gemma2", "gemma3") else 1.0))
            elif "wpe" in name:
                p.copy_(normal(p.shape, 0.5))
            else:  # projection matrices
                fan_in = p.shape[0] if arch == "gpt2" and p.dim() == 2 else p.shape[-1]
                p.copy_(normal(p.shape, 1.6 / fan_in**0.5))
    model.eval()
    return model


def save_tiny(tmp_path, arch: str, seed: int = 0):
    """Write a tiny model and its tokenizer to `tmp_path` (save_pretrained); returns the directory."""
    tok = tiny_tokenizer()
    model = tiny_model(arch, seed, tokenizer=tok)
    out = os.fspath(tmp_path)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def prompt_ids(tokenizer, prompt: str = PROMPT) -> torch.Tensor:
    """BOS + the prompt's ids (the tokenizer itself adds no special tokens)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return torch.tensor([tokenizer.bos_token_id] + list(ids), dtype=torch.long)


# ----------------------------------------------------------------------------------------
# Transcoders
# ----------------------------------------------------------------------------------------
def _cut(vals: torch.Tensor, frac: float, margin: float):
    """A cut between sorted values leaving ~frac of them above it with gap >= 2*margin, or None."""
    n = vals.numel()
    s, _ = vals.sort(descending=True)
    target = max(1, min(n - 1, round(frac * n)))
    best = None
    for k in sorted(range(1, n), key=lambda k: abs(k - target)):
        if abs(k - target) > max(2, n // 4):
            break
        gap = s[k - 1] - s[k]
        if gap >= 2 * margin:
            best = (float(s[k - 1] + s[k]) / 2, k)
            break
    return best


def tiny_transcoders(
    model,
    kind: str = "plt",
    skip: bool = False,
    activation: str = "jumprelu",
    input_hook: str = "hook_resid_mid",
    output_hook: str = "hook_mlp_out",
    prompt_ids: torch.Tensor | None = None,
    seed: int = 0,
    width_mult: int = 4,
    frac_active: float = 0.4,
    k: int | None = None,
) -> Transcoders:
    """Random float32 transcoders (F = width_mult * d) calibrated on `prompt_ids`.

    JumpReLU: per feature, b_enc and threshold are set so that ~frac_active of positions >= 1 are
    active with a clear margin (>= 0.05 std of the feature's pre-activations on either side).
    ReLU: b_enc shifts the same cut to 0. TopK: k = F/4 by default, and b_enc is resampled until
    at every position the k-th and (k+1)-th pre-activations are >= 1e-3 std apart and the k-th
    is clearly positive. Features that cannot be calibrated get their encoder row resampled.
    """
    if prompt_ids is None:
        raise ValueError("tiny_transcoders needs the prompt ids to calibrate thresholds on")
    om = OracleModel(model)
    clean = om.clean(torch.as_tensor(prompt_ids))
    X = clean.input_site(input_hook)  # (L, T, d) float64
    L, T, d = X.shape
    F = width_mult * d
    gen = torch.Generator().manual_seed(7919 + seed)

    def normal(shape, std=1.0):
        return torch.randn(shape, generator=gen, dtype=F64) * std

    W_enc, b_enc, thr, W_dec, b_dec, W_skip = [], [], [], [], [], []
    if activation == "topk" and k is None:
        k = F // 4
    for l in range(L):
        x = X[l, 1:]  # positions that can hold features
        xs = float(x.norm(dim=-1).mean())
        W = normal((F, d), 1.0 / xs)  # pre-activations O(1)
        b = torch.zeros(F, dtype=F64)
        th = torch.zeros(F, dtype=F64)
        if activation in ("jumprelu", "relu"):
            for f in range(F):
                for _attempt in range(200):
                    h = x @ W[f]
                    std = float(h.std())
                    cut = _cut(h, frac_active, 0.05 * std) if std > 0 else None
                    if cut is not None:
                        break
                    W[f] = normal((d,), 1.0 / xs)
                else:
                    raise RuntimeError("could not calibrate a feature")
                mid = cut[0]
                if activation == "jumprelu":
                    theta = (0.1 + 0.4 * float(torch.rand(1, generator=gen))) * std
                    b[f] = theta - mid
                    th[f] = theta
                else:
                    b[f] = -mid
        elif activation == "topk":
            for _attempt in range(500):
                b = normal((F,), 0.3)
                h = x @ W.T + b  # (T-1, F)
                s, _ = h.sort(dim=-1, descending=True)
                std = float(h.std())
                gaps = s[:, k - 1] - s[:, k]
                if bool((gaps >= 1e-3 * std).all()):
                    break
            else:
                raise RuntimeError("could not calibrate a TopK layer")
            # make every kept value clearly positive (a shared shift leaves the ranks unchanged)
            b = b + (0.5 * std - float(s[:, k - 1].min()))
        else:
            raise ValueError(f"unknown activation {activation!r}")
        W_enc.append(W)
        b_enc.append(b)
        thr.append(th)
        n_out = 1 if kind == "plt" else L - l
        out_scale = float(clean.output_site(output_hook)[l].norm(dim=-1).mean())
        W_dec.append(normal((F, n_out, d), out_scale / (d**0.5) / (0.4 * F) ** 0.5))
        b_dec.append(normal((d,), 0.1 * out_scale / d**0.5))
        if skip:
            W_skip.append(normal((d, d), 0.5 * out_scale / (xs * d**0.5)))
    f32 = lambda ts: [t.to(torch.float32) for t in ts]  # noqa: E731
    return Transcoders(
        kind=kind,
        W_enc=f32(W_enc),
        b_enc=f32(b_enc),
        W_dec=f32(W_dec),
        b_dec=f32(b_dec),
        activation=activation,
        threshold=f32(thr) if activation == "jumprelu" else None,
        k=k,
        W_skip=f32(W_skip) if skip else None,
        input_hook=input_hook,
        output_hook=output_hook,
        name=f"tiny-{kind}{'-skip' if skip else ''}-{activation}",
    )


def tiny_llama_replacement(kind: str):
    """A ReplacementModel of the tiny Llama with a random ReLU `kind` ("plt" / "clt") set of 48 features per layer."""
    from circuit_atlas import ReplacementModel
    from circuit_atlas.transcoders.random import random_transcoders

    tok = tiny_tokenizer()
    hf = tiny_model("llama", tokenizer=tok)
    cfg = hf.config
    tc = random_transcoders(kind, cfg.num_hidden_layers, cfg.hidden_size, 48, activation="relu", seed=3)
    return ReplacementModel(hf, tok, tc)
