"""Hub ids resolved offline against a real Hugging Face cache layout built here.

No hub is reachable in CI, so each test writes the layout `huggingface_hub` itself writes and reads
(models--owner--name/{blobs, refs/<branch>, snapshots/<commit>/<file> -> ../../blobs/<hash>}) into
a fresh HF_HUB_CACHE, sets HF_HUB_OFFLINE=1, and calls the real resolution code.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tiny import PROMPT, prompt_ids, save_tiny, tiny_tokenizer, tiny_transcoders  # noqa: E402

from circuit_atlas import ReplacementModel  # noqa: E402
from circuit_atlas.models.hub import (  # noqa: E402
    HubUnavailableError,
    hub_transcoders_dir,
    looks_like_hub_id,
    parse_hub_ref,
)
from circuit_atlas.transcoders.io import load_transcoders, save_circuit_tracer_format, save_transcoders  # noqa: E402


def publish(cache: Path, repo_id: str, files: dict[str, Path], branch: str = "main") -> str:
    """Put `files` (path in repo -> local file) into the cache as one commit on `branch`; returns the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    digest = hashlib.sha1()
    for name in sorted(files):
        digest.update(name.encode() + Path(files[name]).read_bytes())
    commit = digest.hexdigest()
    for name, src in files.items():
        data = Path(src).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return commit


def folder_files(folder: Path, prefix: str = "") -> dict[str, Path]:
    return {prefix + str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """A fresh, empty Hub cache with HF_HUB_OFFLINE=1 (constants are read at import, so patch them too)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("CIRCUIT_ATLAS_CACHE", str(tmp_path / "ca-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _tiny(tmp_path, seed=0):
    path = Path(save_tiny(tmp_path / f"model{seed}", "llama", seed=seed))
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path)
    tc = tiny_transcoders(hf, "plt", True, "jumprelu", "hook_resid_mid", "hook_mlp_out", prompt_ids(tiny_tokenizer()))
    return path, hf, tc


def test_parse_references():
    assert str(parse_hub_ref("google/gemma-2-2b")) == "google/gemma-2-2b"
    r = parse_hub_ref("mntss/clt-gemma-2-2b-426k/sub/dir@v1.0")
    assert (r.repo_id, r.subfolder, r.revision) == ("mntss/clt-gemma-2-2b-426k", "sub/dir", "v1.0")
    r = parse_hub_ref("hf://google/gemma-scope-2b-pt-transcoders/layer_0/width_16k/params.npz?revision=abc")
    assert (r.repo_id, r.subfolder, r.revision) == (
        "google/gemma-scope-2b-pt-transcoders",
        "layer_0/width_16k/params.npz",
        "abc",
    )
    assert looks_like_hub_id("google/gemma-2-2b")
    assert not looks_like_hub_id("toyworld") and not looks_like_hub_id("/abs/path") and not looks_like_hub_id("./a/b")


def test_model_and_transcoders_by_hub_id_with_revisions(tmp_path, offline_cache):
    path0, hf0, tc = _tiny(tmp_path, 0)
    path1, hf1, _ = _tiny(tmp_path, 1)
    save_transcoders(tc, tmp_path / "tc")
    old = publish(offline_cache, "acme/tiny-llama", folder_files(path0), branch="v1")
    new = publish(offline_cache, "acme/tiny-llama", folder_files(path1), branch="main")
    publish(offline_cache, "acme/tiny-transcoders", folder_files(tmp_path / "tc"))
    ids = prompt_ids(tiny_tokenizer())
    with torch.no_grad():
        ref0, ref1 = hf0(ids[None]).logits[0], hf1(ids[None]).logits[0]
    for name, ref in (("acme/tiny-llama", ref1), ("acme/tiny-llama@v1", ref0), (f"acme/tiny-llama@{old}", ref0),
                      (f"acme/tiny-llama@{new}", ref1)):  # fmt: skip
        model = ReplacementModel.from_pretrained(name, "acme/tiny-transcoders")
        assert model.name == name  # graphs record the model as the user named it; the logits show the revision
        torch.testing.assert_close(model.logits(PROMPT), ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(model.transcoders.W_enc[1], tc.W_enc[1])


def test_circuit_tracer_config_pointing_into_other_repositories(tmp_path, offline_cache):
    path, _, tc = _tiny(tmp_path)
    native = save_circuit_tracer_format(tc, tmp_path / "native")
    layer_files = sorted(Path(native).glob("layer_*.safetensors"))
    assert len(layer_files) == tc.n_layers
    # The weights live in a vendor repository, one folder per layer; the config in another repository.
    publish(offline_cache, "vendor/tiny-scope", {f"layer_{l}/width_128/params.safetensors": f for l, f in
                                                 enumerate(layer_files)})  # fmt: skip
    config = {
        "model_name": "acme/tiny-llama",
        "model_kind": "transcoder_set",
        "feature_input_hook": "hook_resid_mid",
        "feature_output_hook": "hook_mlp_out",
        "transcoders": [f"hf://vendor/tiny-scope/layer_{l}/width_128/params.safetensors" for l in range(tc.n_layers)],
    }
    cfg = tmp_path / "cfg" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text(yaml.safe_dump(config))
    publish(offline_cache, "acme/tiny-config", {"config.yaml": cfg})
    # a local folder does not record its Hub name, so the recorded "acme/tiny-llama" is not matched by name
    model = ReplacementModel.from_pretrained(path, "acme/tiny-config", allow_model_mismatch=True)
    for l in range(tc.n_layers):
        assert torch.equal(model.transcoders.W_enc[l], tc.W_enc[l])
        assert torch.equal(model.transcoders.W_dec[l], tc.W_dec[l])
    resolved = yaml.safe_load((hub_transcoders_dir("acme/tiny-config") / "config.yaml").read_text())
    assert all(str(offline_cache) in p for p in resolved["transcoders"])
    # A listed file whose repository is not cached: one error naming the layer and the fix.
    shutil.rmtree(offline_cache / "models--vendor--tiny-scope")
    with pytest.raises(HubUnavailableError, match=r"layer 0 'hf://vendor/tiny-scope/layer_0/.*could not be reached"):
        load_transcoders(hub_transcoders_dir("acme/tiny-config"))


def test_unreachable_and_uncached(tmp_path, offline_cache):
    path, _, tc = _tiny(tmp_path)
    with pytest.raises(HubUnavailableError, match=r"model 'nobody/missing' is not a local path, and the Hugging "
                       r"Face Hub repository could not be reached \(HF_HUB_OFFLINE is set\) nor found in the "
                       r"cache .*Fix: connect and retry"):  # fmt: skip
        ReplacementModel.from_pretrained("nobody/missing", tc)
    with pytest.raises(
        HubUnavailableError, match=r"transcoder set 'nobody/missing-tc' .*hf download nobody/missing-tc"
    ):
        ReplacementModel.from_pretrained(path, "nobody/missing-tc")
    publish(offline_cache, "acme/tiny-llama", folder_files(path))
    with pytest.raises(HubUnavailableError, match=r"'acme/tiny-llama@v9' .*could not be reached"):
        ReplacementModel.from_pretrained("acme/tiny-llama@v9", tc)
