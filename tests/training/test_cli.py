"""The train-transcoders command line: flags map onto TrainConfig, errors come out as one line."""

import argparse

from circuit_atlas.training.cli import add_train_parser, config_from_args, field_docs, main
from circuit_atlas.training.config import TrainConfig


def test_flags_build_the_config():
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train-transcoders", "--model", "m", "--data", "d", "--out", "o", "--kind", "clt",
                              "--activation", "batchtopk", "--k", "16", "--width", "512", "--skip",
                              "--no-pack-documents", "--batch-tokens", "2048", "--input-hook", "mlp.hook_in"])  # fmt: skip
    cfg = config_from_args(args)
    assert cfg == TrainConfig(kind="clt", activation="batchtopk", k=16, width=512, skip=True, pack_documents=False,
                              batch_tokens=2048, input_hook="mlp.hook_in")  # fmt: skip
    assert args.func.__name__ == "cmd_train"
    assert set(field_docs()) == {f for f in TrainConfig.__dataclass_fields__}  # every field documented


def test_bad_input_is_one_error_line(tmp_path, model_dir, capsys):
    data = tmp_path / "blob.txt"
    data.write_bytes(b"\x00\xff" * 10)
    code = main(["--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("circuit-atlas: error:") and "not a text file" in err
    code = main(["--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "out"), "--width", "4",
                 "--target-l0", "8"])  # fmt: skip
    assert code == 2 and "cannot be reached with width 4" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_existing_out_is_refused_without_force(tmp_path, model_dir, data_file, capsys):
    out = tmp_path / "out"
    flags = ["--model", str(model_dir), "--data", str(data_file), "--out", str(out), "--no-progress", "--steps", "2",
             "--width", "48", "--batch-tokens", "256", "--seq-len", "16", "--eval-tokens", "256"]  # fmt: skip
    assert main(flags) == 0
    capsys.readouterr()
    before = (out / "layer_0.safetensors").read_bytes()
    assert main(flags + ["--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{out} already holds a transcoder set (plt jumprelu, 3 layers x 48 features" in err
    assert "FVU" in err and "--force" in err
    assert (out / "layer_0.safetensors").read_bytes() == before
    assert main(flags + ["--seed", "1", "--force"]) == 0
    assert (out / "layer_0.safetensors").read_bytes() != before
