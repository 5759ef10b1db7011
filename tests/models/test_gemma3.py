"""Gemma-3 specifics beyond the shared architecture matrix: GemmaScope-2 transcoder files load
onto a (tiny random) Gemma-3 and mean what GemmaScope-2's reference code means."""

from __future__ import annotations

import os
import sys

import torch
import yaml
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tiny import PROMPT, prompt_ids, save_tiny, tiny_model, tiny_tokenizer, tiny_transcoders  # noqa: E402

from circuit_atlas import ReplacementModel  # noqa: E402


def test_gemmascope2_files_load_on_gemma3(tmp_path):
    tok = tiny_tokenizer()
    hf = tiny_model("gemma3", 0, tokenizer=tok)
    ids = prompt_ids(tok)
    tc = tiny_transcoders(hf, "plt", True, "jumprelu", "mlp.hook_in", "hook_mlp_out", ids, seed=3)
    # GemmaScope-2's layout: lower-case keys, w_enc (d, F), affine_skip_connection used as x @ A.
    raw = []
    for l in range(tc.n_layers):
        arrays = {
            "w_enc": tc.W_enc[l].T.contiguous(),
            "b_enc": tc.b_enc[l],
            "threshold": tc.threshold[l],
            "w_dec": tc.W_dec[l][:, 0].contiguous(),
            "b_dec": tc.b_dec[l],
            "affine_skip_connection": tc.W_skip[l].T.contiguous(),
        }
        path = tmp_path / "tc" / f"layer_{l}_width_16k_l0_small" / "params.safetensors"
        path.parent.mkdir(parents=True)
        save_file(arrays, path)
        raw.append(arrays)
    config = {
        "model_name": "google/gemma-3-270m",
        "model_kind": "transcoder_set",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "hook_mlp_out",
        "transcoders": [f"layer_{l}_width_16k_l0_small/params.safetensors" for l in range(tc.n_layers)],
    }
    (tmp_path / "tc" / "config.yaml").write_text(yaml.safe_dump(config))
    # a tiny random stand-in for the recorded google/gemma-3-270m: the name check rightly refuses it otherwise
    model = ReplacementModel.from_pretrained(save_tiny(tmp_path / "model", "gemma3"), tmp_path / "tc",
                                             allow_model_mismatch=True)  # fmt: skip
    assert model.architecture.name == "gemma3"
    assert (model.transcoders.input_hook, model.transcoders.output_hook) == ("mlp.hook_in", "hook_mlp_out")

    # The reference maths, on the MLP inputs Hugging Face's own Gemma-3 computes.
    seen = []
    handles = [b.mlp.register_forward_pre_hook(lambda m, a: seen.append(a[0][0])) for b in hf.model.layers]
    with torch.no_grad():
        hf(ids[None])
    for h in handles:
        h.remove()
    acts = model.activations(PROMPT)
    expected_acts = []
    for l, arrays in enumerate(raw):
        x = seen[l]
        pre = x @ arrays["w_enc"] + arrays["b_enc"]
        expected = torch.where(pre > arrays["threshold"], pre, torch.zeros_like(pre))
        expected[0] = 0  # BOS holds no features
        assert (expected[1:] != 0).any()
        torch.testing.assert_close(acts.dense(l)[1:], expected[1:], atol=1e-4, rtol=1e-4)
        expected_acts.append(expected)
    # Reconstruction: a @ w_dec + b_dec + x @ affine_skip_connection, at every layer.
    ours = model.transcoders.reconstruct(expected_acts, torch.stack(seen))
    for l, arrays in enumerate(raw):
        recon = expected_acts[l] @ arrays["w_dec"] + arrays["b_dec"] + seen[l] @ arrays["affine_skip_connection"]
        torch.testing.assert_close(ours[l], recon, atol=1e-4, rtol=1e-4)
