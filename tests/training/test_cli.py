"""The train-transcoders command line: flags map onto TrainConfig, errors come out as one line."""

import argparse
import json

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


def test_an_option_the_activation_ignores_is_one_error(tmp_path, model_dir, data_file, capsys):
    code = main(["--model", str(model_dir), "--data", str(data_file), "--out", str(tmp_path / "out"), "--k", "16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "jumprelu ignores it" in err
    assert not (tmp_path / "out").exists()


def test_final_metrics_are_printed_with_a_plain_warning_when_poor(tmp_path, model_dir, data_file, capsys):
    out = tmp_path / "out"
    code = main(["--model", str(model_dir), "--data", str(data_file), "--out", str(out), "--no-progress", "--steps",
                 "2", "--width", "48", "--batch-tokens", "256", "--seq-len", "16", "--eval-tokens", "256",
                 "--target-l0", "6"])  # fmt: skip
    captured = capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    assert code == 0
    summary, written = captured.out.splitlines()
    assert summary.startswith(f"FVU {metrics['fvu_mean']:.3f} (per layer ") and "(asked 6)" in summary
    assert f"dead features {metrics['dead_fraction_mean']:.1%}" in summary
    assert written.startswith(f"transcoders and metrics.json written to {out}")
    # two steps cannot reconstruct: said, with what to try, on stderr and in metrics.json
    warnings = captured.err.strip().splitlines()
    assert metrics["warnings"] and warnings == [f"circuit-atlas: warning: {w}" for w in metrics["warnings"]]
    assert any(w.startswith(f"the reconstruction is poor: FVU {metrics['fvu_mean']:.3f}") and "--steps" in w
               for w in metrics["warnings"])  # fmt: skip
