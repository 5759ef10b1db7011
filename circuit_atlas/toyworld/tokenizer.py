"""The toy world's byte-level BPE tokenizer.

Trained with `tokenizers` on the corpus *with every city name removed* (see
`corpus.tokenizer_text`) and a vocabulary large enough for the BPE merges to run to completion:
every other word of the corpus -- template words, region names, capitals, codes, opposites --
becomes one token (with its leading space, GPT-2 style), while city names, never seen by the BPE
trainer, are spelled with sub-word pieces ("Dallas" -> " D" "all" "as"). So the model must build
"Dallas" -> Texas in its layers, and the answer of a two-hop prompt is always one token.

Chinese characters are split off one by one before the byte-level step, so "小的反义词是大" is
"小" "的" "反" "义" "词" "是" "大".

Saved with `PreTrainedTokenizerFast.save_pretrained`; `AutoTokenizer.from_pretrained(dir)` loads it.
Special tokens: <pad> (0), <bos> (1), <eos> (2). Encoding with `add_special_tokens=True` (the
default) prepends <bos>.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
CJK = r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """Train the byte-level BPE on `texts`; returns a `PreTrainedTokenizerFast`."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CJK), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        model_max_length=64,
        padding_side="right",
    )


def save_tokenizer(tokenizer, out_dir) -> None:
    tokenizer.save_pretrained(str(out_dir))


def load_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def n_tokens(tokenizer, word: str, leading_space: bool = True) -> int:
    """How many tokens `word` takes in running text (with its leading space unless told)."""
    return len(tokenizer.encode((" " if leading_space else "") + word, add_special_tokens=False))
