"""Toy-world tokenizer: loads with AutoTokenizer, BOS set, cities multi-token, answers single-token."""

import os

import pytest

from circuit_atlas.toyworld import corpus as C
from circuit_atlas.toyworld import tokenizer as T
from circuit_atlas.toyworld import world as W

SHIPPED = os.path.join(os.path.dirname(C.__file__), "..", "zoo", "toyworld", "model")


@pytest.fixture(scope="module")
def saved_tokenizer(tmp_path_factory):
    docs = C.generate_corpus(seed=0, n_sentences=3000)
    tok = T.train_tokenizer(C.tokenizer_text(docs))
    d = tmp_path_factory.mktemp("tok")
    T.save_tokenizer(tok, d)
    return d


def _check(tok):
    assert tok.bos_token == "<bos>" and tok.bos_token_id is not None
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    assert tok("Dallas is in").input_ids[0] == tok.bos_token_id  # BOS prepended by default
    assert tok("Dallas is in", add_special_tokens=False).input_ids[0] != tok.bos_token_id
    # the showcase cities span several tokens; every capital, code and one-word region is one token
    for city in W.SHOWCASE:
        assert T.n_tokens(tok, city) >= 2, city
    multi = sum(T.n_tokens(tok, c) > 1 for c, _ in W.all_cities()) / len(W.all_cities())
    assert multi > 0.9
    for r in W.REGIONS:
        assert T.n_tokens(tok, r.capital) == 1, r.capital
        assert T.n_tokens(tok, r.code) == 1, r.code
        if " " not in r.name:
            assert T.n_tokens(tok, r.name) == 1, r.name
    for concept in W.OPPOSITES:
        for lang_i, pair in enumerate(concept):
            for w in pair:
                assert T.n_tokens(tok, w, leading_space=lang_i != 2) == 1, w
    text = "小的反义词是大。 Le contraire de léger est lourd."
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text


def test_autotokenizer_loads_trained_tokenizer(saved_tokenizer):
    _check(T.load_tokenizer(saved_tokenizer))


def test_chinese_split_per_character(saved_tokenizer):
    tok = T.load_tokenizer(saved_tokenizer)
    ids = tok("小的反义词是大", add_special_tokens=False).input_ids
    assert [tok.decode([i]) for i in ids] == list("小的反义词是大")


@pytest.mark.skipif(not os.path.isdir(SHIPPED), reason="shipped toy-world model not built")
def test_shipped_tokenizer():
    _check(T.load_tokenizer(SHIPPED))
