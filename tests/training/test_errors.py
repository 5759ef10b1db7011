"""Bad input gets one clear error, before anything is written."""

import json

import pytest

from circuit_atlas.training import TrainConfig, train_transcoders
from circuit_atlas.training.data import read_documents


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(width=0), "width must be at least 1"),
        (dict(width=16, target_l0=17), "target_l0 = 17 cannot be reached with width 16"),
        (dict(activation="topk", k=33, width=32), "k = 33 active features cannot be reached"),
        (dict(activation="batchtopk"), "batchtopk needs k"),
        (dict(kind="xlt"), "kind must be one of"),
        (dict(activation="gelu"), "activation must be one of"),
        (dict(batch_tokens=100, seq_len=64), "multiple of seq_len"),
        (dict(lr=0), "lr must be positive"),
        (dict(sparsity_coefficient=-1), "sparsity_coefficient must be >= 0"),
        (dict(input_hook="blocks.0.hook_resid_pre"), "unknown transcoder input hook"),
        (dict(steps=0), "steps must be at least 1"),
        # settings the activation would ignore
        (dict(k=16), r"k \(--k 16\) sets the active features of topk / batchtopk; jumprelu ignores it.*--target-l0 16"),
        (dict(activation="relu", k=4), "relu ignores it"),
        (dict(activation="topk", k=8, sparsity_coefficient=0.01),
         r"sparsity_coefficient \(--sparsity-coefficient 0.01\) only applies to the sparsity penalty of jumprelu"),
        (dict(activation="batchtopk", k=8, tanh_scale=2.0, init_firing=0.1),
         r"tanh_scale \(--tanh-scale 2.0\), init_firing \(--init-firing 0.1\) only apply to the sparsity penalty"),
        (dict(activation="topk", k=8, sparsity_warmup=0.5), "sparsity_warmup"),
        (dict(activation="topk", k=8, pre_act_coefficient=0.0), "pre_act_coefficient"),
        (dict(activation="relu", bandwidth=1.0), r"bandwidth \(--bandwidth 1.0\) only applies to jumprelu's learnt"),
        (dict(activation="topk", k=8, init_threshold=0.5), "init_threshold .* only applies to jumprelu's"),
        (dict(activation="topk", k=8, target_l0=12), "k = 8 and target_l0 = 12 disagree"),
    ],
)  # fmt: skip
def test_config_rejects_impossible_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_settings_at_their_defaults_are_not_counted_as_given():
    TrainConfig(activation="topk", k=8, sparsity_coefficient=1e-3, bandwidth=2.0)  # the defaults: fine
    cfg = TrainConfig(activation="batchtopk", target_l0=12.4, width=64)  # k = 12 taken from target_l0
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg and cfg.resolve(32).k == 12  # what a checkpoint reloads
    TrainConfig(activation="relu", target_l0=8, sparsity_coefficient=0.01, init_firing=0.1)  # they apply to relu


def test_topk_takes_k_from_target_l0():
    assert TrainConfig(activation="topk", target_l0=12.4).k == 12


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", b"", "empty"),
        ("blank.txt", b"\n  \n\t\n", "empty"),
        ("model.bin", b"\x00\x01\x02binary", "not a text file"),
        ("latin1.txt", "caf\xe9 au lait".encode("latin-1"), "not UTF-8"),
        ("bad.jsonl", b'{"text": "fine"}\n{oops\n', r"bad.jsonl:2 is not valid JSON"),
        ("nums.jsonl", b'{"text": 3}\n', '"text" string'),
    ],
)
def test_bad_data_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_documents(path)


def test_data_directories(tmp_path):
    with pytest.raises(ValueError, match="no .txt or .jsonl"):
        read_documents(tmp_path)
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text(json.dumps({"text": "three"}) + "\n" + json.dumps("four") + "\n")
    (tmp_path / "ignored.csv").write_text("x,y\n")
    assert read_documents(tmp_path) == ["one", "two", "three", "four"]
    with pytest.raises(FileNotFoundError):
        read_documents(tmp_path / "missing")


def test_tokenize_packed_and_one_document_per_sequence():
    from tiny import tiny_tokenizer

    from circuit_atlas.training.data import tokenize

    tok = tiny_tokenizer()
    docs = ["The capital of Texas is Austin", "a big red dog", "the cat"]
    ids, valid = tokenize(docs, tok, 6)
    assert valid.all() and (ids[:, 0] == tok.bos_token_id).all()
    words = " ".join(tok.convert_ids_to_tokens(ids[:, 1:].flatten().tolist()))
    assert words == "The capital of Texas is Austin <bos> a big red"  # 2 x 5 tokens; the partial tail is dropped
    ids, valid = tokenize(docs, tok, 6, pack=False)
    assert ids.shape == (3, 6) and valid.sum(1).tolist() == [6, 5, 3]  # BOS + 5 (cut), BOS + 4, BOS + 2
    assert (ids[~valid] == tok.pad_token_id).all()


def test_a_model_directory_that_is_not_a_causal_lm(tmp_path, data_file):
    cfg = TrainConfig(steps=1, batch_tokens=64, seq_len=16)
    with pytest.raises(FileNotFoundError):
        train_transcoders(tmp_path / "nowhere", data_file, tmp_path / "out", cfg)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        train_transcoders(tmp_path / "plain", data_file, tmp_path / "out", cfg)
    from transformers import BertConfig

    BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
               ).save_pretrained(tmp_path / "bert")  # fmt: skip
    with pytest.raises(ValueError, match="not a causal language model.*'bert'"):
        train_transcoders(tmp_path / "bert", data_file, tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


def test_data_too_short_and_seq_len_too_long(tmp_path, model_dir, data_file):
    short = tmp_path / "short.txt"
    short.write_text("The capital of Texas\n")
    with pytest.raises(ValueError, match="fewer than one sequence"):
        train_transcoders(model_dir, short, tmp_path / "out", TrainConfig(steps=1, batch_tokens=64, seq_len=16))
    with pytest.raises(ValueError, match="longer than the model's context of 64"):
        train_transcoders(model_dir, data_file, tmp_path / "out", TrainConfig(steps=1, batch_tokens=128, seq_len=128))


def test_refuses_to_replace_a_directory_that_is_not_a_transcoder_set(tmp_path, model_dir, data_file):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.md").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and holds no transcoder set"):
        train_transcoders(model_dir, data_file, out, TrainConfig(steps=1, batch_tokens=64, seq_len=16))
    assert (out / "todo.md").read_text() == "keep me"


def test_eval_data_with_no_eval_tokens_is_refused(tmp_path, model_dir, data_file):
    cfg = TrainConfig(steps=1, batch_tokens=64, seq_len=16, eval_tokens=0)
    with pytest.raises(ValueError, match="eval_tokens = 0 .* measures nothing"):
        train_transcoders(model_dir, data_file, tmp_path / "out", cfg, eval_data=data_file)
    assert not (tmp_path / "out").exists()
