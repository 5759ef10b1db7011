"""`circuit-atlas trace-batch`: every graph equals the single-prompt `trace` graph, in one process and under a
real `torchrun --nproc_per_node 2` (gloo on the CPU); resuming redoes exactly what is missing or broken; a prompt
that fails is recorded with its error. Runs on the shipped toy world."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circuit_atlas.attribution.batch import MANIFEST, Launch, file_sha256, rank_device
from circuit_atlas.attribution.prompts import PromptSpec
from circuit_atlas.cli import build_parser, main, run_trace
from circuit_atlas.graph import Graph

ROOT = Path(__file__).resolve().parents[2]
MODEL = ["--model", "toyworld", "--transcoders", "toyworld-clt"]
PROMPTS = [
    "The capital of the state containing Dallas is",
    "The capital of the state containing Oakland is",
    "The opposite of small is",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """torchrun gives each rank one thread (OMP_NUM_THREADS=1); the in-process traces here use one too. At
    another thread count float32 sums run in another order and edges differ by ~1 ulp (measured: <= 3e-6 on
    edges up to 8), which says nothing about batching; at equal thread counts the graphs are bit for bit equal."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same_graph(got: Graph, want: Graph) -> None:
    """Same nodes, same edges (CSR structure equal, values within 1e-6), same metadata except timings."""
    assert got.prompt == want.prompt and got.tokens == want.tokens and got.n_layers == want.n_layers
    assert got.logit_labels == want.logit_labels
    for name in ("input_ids", "kind", "layer", "position", "feature", "row_nodes", "edge_indptr", "edge_sources"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    torch.testing.assert_close(got.activation, want.activation, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.edge_values, want.edge_values, rtol=1e-6, atol=1e-6)

    def untimed(meta: dict) -> dict:
        return {k: v for k, v in meta.items() if not k.endswith("_seconds")}

    assert untimed(got.metadata) == untimed(want.metadata)
    assert got.n_edges > 1000 and got.count("feature") > 10  # a real graph, not two empty ones


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[Graph]:
    """Each prompt traced alone by the `trace` command's own code (cli.run_trace), the model loaded once."""
    from circuit_atlas.replacement_model import ReplacementModel

    folder = tmp_path_factory.mktemp("trace")
    model = ReplacementModel.from_pretrained("toyworld", "toyworld-clt")
    graphs = []
    for i, prompt in enumerate(PROMPTS):
        out = folder / f"{i}.safetensors"
        argv = ["trace", *MODEL, "--prompt", prompt, "--out", str(out), "--no-progress"]
        assert run_trace(model, build_parser(argv).parse_args(argv)) == 0
        graphs.append(Graph.load(str(out)))
    return graphs


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory, prompts_file) -> Path:
    out = tmp_path_factory.mktemp("batch") / "out"
    assert main(["trace-batch", str(prompts_file), "--out", str(out), *MODEL, "--no-progress"]) == 0
    return out


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text(encoding="utf-8"))


def test_every_graph_equals_its_single_prompt_trace(batch, reference):
    data = manifest(batch)
    assert (data["format"], data["version"], data["world_size"]) == ("circuit-atlas-trace-batch", 1, 1)
    assert data["counts"] == {"ok": 3, "failed": 0, "reused": 0}
    assert [g["prompt"] for g in data["graphs"]] == PROMPTS and [g["index"] for g in data["graphs"]] == [0, 1, 2]
    for entry, want in zip(data["graphs"], reference):
        path = batch / entry["file"]
        assert entry["status"] == "ok" and entry["sha256"] == file_sha256(path) and entry["seconds"] > 0
        assert_same_graph(Graph.load(str(path)), want)
    assert not list(batch.glob("*.tmp")) and not list(batch.glob(".*.tmp"))


def _stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}


def test_resume_redoes_only_what_is_missing_or_broken(batch, prompts_file, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(batch, out)
    before = _stamps(out)
    (out / "00001.safetensors").unlink()
    assert main(["trace-batch", str(prompts_file), "--out", str(out), *MODEL, "--no-progress"]) == 0
    data = manifest(out)
    assert data["counts"] == {"ok": 3, "failed": 0, "reused": 2}
    assert [g["reused"] for g in data["graphs"]] == [True, False, True]
    after = _stamps(out)
    assert after["00000.safetensors"] == before["00000.safetensors"]  # untouched, not rewritten
    assert after["00002.safetensors"] == before["00002.safetensors"]
    assert_same_graph(Graph.load(str(out / "00001.safetensors")), reference[1])

    # A half-written graph (cut short) and a changed prompt are both traced again; the rest is kept.
    path = out / "00000.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    changed = tmp_path / "changed.txt"
    changed.write_text("\n".join([*PROMPTS[:2], "The opposite of big is"]) + "\n", encoding="utf-8")
    kept = _stamps(out)["00001.safetensors"]
    assert main(["trace-batch", str(changed), "--out", str(out), *MODEL, "--no-progress"]) == 0
    data = manifest(out)
    assert [g["reused"] for g in data["graphs"]] == [False, True, False]
    assert _stamps(out)["00001.safetensors"] == kept
    assert_same_graph(Graph.load(str(path)), reference[0])
    assert Graph.load(str(out / "00002.safetensors")).prompt == "The opposite of big is"
    assert data["graphs"][2]["sha256"] == file_sha256(out / "00002.safetensors")

    # Another memory budget changes no graph; another attribution setting changes them all.
    run = ["trace-batch", str(changed), "--out", str(out), *MODEL, "--no-progress"]
    assert main([*run, "--memory-budget-gb", "6"]) == 0 and manifest(out)["counts"]["reused"] == 3
    assert main([*run, "--max-n-logits", "2"]) == 0 and manifest(out)["counts"]["reused"] == 0
    assert manifest(out)["settings"]["max_n_logits"] == 2


def test_a_failing_prompt_is_recorded_and_the_others_go_on(tmp_path, reference, capsys):
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"prompt": PROMPTS[0], "id": "dallas", "target": " Austin"}, {"prompt": PROMPTS[2], "target": " Zzyzx"}]
    prompts.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["trace-batch", str(prompts), "--out", str(out), *MODEL, "--no-progress"]) == 1
    data = manifest(out)
    ok, failed = data["graphs"]
    assert ok["status"] == "ok" and ok["file"] == "dallas.safetensors" and ok["targets"] == [" Austin"]
    graph = Graph.load(str(out / "dallas.safetensors"))
    assert graph.logit_labels == [" Austin"]
    assert failed["status"] == "failed" and failed["file"] is None and failed["line"] == 2
    assert "' Zzyzx' is not a single token" in failed["error"]
    assert not (out / "00001.safetensors").exists()
    assert "failed: 00001 (line 2): ValueError: target ' Zzyzx'" in capsys.readouterr().out

    # The same target given to `trace` gives the same graph.
    from circuit_atlas.replacement_model import ReplacementModel

    single = tmp_path / "single.safetensors"
    argv = ["trace", *MODEL, "--prompt", PROMPTS[0], "--target", " Austin", "--out", str(single), "--no-progress"]
    assert run_trace(ReplacementModel.from_pretrained("toyworld", "toyworld-clt"),
                     build_parser(argv).parse_args(argv)) == 0  # fmt: skip
    assert_same_graph(graph, Graph.load(str(single)))

    # Moved lines keep their graphs (by id); the fixed prompt is traced; the failed one leaves nothing behind.
    lines = [{"prompt": PROMPTS[2], "id": "small"}, lines[0]]
    prompts.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    assert main(["trace-batch", str(prompts), "--out", str(out), *MODEL, "--no-progress"]) == 0
    data = manifest(out)
    assert [(g["id"], g["index"], g["line"], g["reused"]) for g in data["graphs"]] == [
        ("small", 0, 1, False),
        ("dallas", 1, 2, True),
    ]
    assert_same_graph(Graph.load(str(out / "small.safetensors")), reference[2])


def test_help_lists_the_trace_options():
    text = " ".join(
        build_parser(["trace-batch"])._subparsers._group_actions[0].choices["trace-batch"].format_help().split()
    )
    wanted = ["PROMPTS_FILE", "--out DIR", "--model", "--transcoders", "--target TEXT", "--target-id ID",
              "--max-feature-nodes", "--edge-budget", "--memory-budget-gb", "torchrun --nproc_per_node N",
              "prompt i on rank i % N;"]  # fmt: skip
    for flag in wanted:
        assert flag in text, flag


def test_bad_prompts_file_is_one_clear_error_before_the_model_loads(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "The capital of"}\n{"prompt": "x", "taget": " Austin"}\n', encoding="utf-8")
    argv = ["trace-batch", str(prompts), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "never-loaded"),
            "--transcoders", str(tmp_path / "never-loaded")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"circuit-atlas: error: {prompts}:2: unknown key(s) 'taget'; the keys are prompt, id, target, targets"
    ]
    assert not (tmp_path / "out").exists()


def test_torchrun_two_ranks_shard_the_prompts_and_equal_single_traces(tmp_path, prompts_file, reference):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "circuit_atlas", "trace-batch", str(prompts_file), "--out", str(out), *MODEL, "--no-progress"]  # fmt: skip
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", CUDA_VISIBLE_DEVICES="")  # gloo on the CPU
    r = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rank 0 of 2, 2 of 3 prompts" in r.stderr and "rank 1 of 2, 1 of 3 prompts" in r.stderr
    data = manifest(out)
    assert data["world_size"] == 2 and data["counts"] == {"ok": 3, "failed": 0, "reused": 0}
    assert [g["index"] for g in data["graphs"]] == [0, 1, 2]  # every prompt exactly once
    assert [g["rank"] for g in data["graphs"]] == [0, 1, 0]  # prompt i on rank i % 2
    for entry, want in zip(data["graphs"], reference):
        assert entry["sha256"] == file_sha256(out / entry["file"])
        assert_same_graph(Graph.load(str(out / entry["file"])), want)


def test_rank_devices():
    alone, two = Launch(), Launch(rank=1, world_size=2, local_rank=1, local_world_size=2, torchrun=True)
    assert rank_device(None, alone) is None and rank_device("cuda:3", alone) == "cuda:3"
    assert rank_device("cpu", two) == "cpu"
    with pytest.raises(ValueError, match="would put every rank on one GPU; give --device cuda"):
        rank_device("cuda:1", two)
    if not torch.cuda.is_available():
        assert rank_device(None, two) is None  # the CPU, gloo
        with pytest.raises(ValueError, match="torch sees no GPU here"):
            rank_device("cuda", two)
    elif torch.cuda.device_count() >= 2:
        assert rank_device(None, two) == "cuda:1"
    assert [s.index for s in two.shard([PromptSpec(i, "p", str(i)) for i in range(5)])] == [1, 3]


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, prompts_file, capsys):
    import fcntl

    out = tmp_path / "out"
    (out / ".trace-batch").mkdir(parents=True)
    with open(out / ".trace-batch" / "rank-0.lock", "a+") as held:  # as a running trace-batch holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        argv = ["trace-batch", str(prompts_file), "--out", str(out), "--model", str(tmp_path / "never-loaded"),
                "--transcoders", str(tmp_path / "never-loaded")]  # fmt: skip
        assert main(argv) == 2
    assert f"another trace-batch is writing into {out} (rank 0)" in capsys.readouterr().err
    assert not list(out.glob("*.safetensors"))
