"""Sites harvested through HF module hooks equal our explicit forward's, on every architecture."""

import pytest
import torch
from tiny import ARCHS, tiny_model, tiny_tokenizer

from circuit_atlas import ReplacementModel
from circuit_atlas.models.hooks import harvest, replaced_mlps
from circuit_atlas.transcoders.random import random_transcoders

SITES = [
    (i, o) for i in ("hook_resid_mid", "ln2.hook_normalized", "mlp.hook_in") for o in ("hook_mlp_out", "mlp.hook_out")
]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _batch(tok, B=3, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, len(tok), (B, T), generator=g)
    ids[:, 0] = tok.bos_token_id
    return ids


@pytest.mark.parametrize("arch", ARCHS)
def test_harvest_equals_clean_forward(arch, tok):
    hf = tiny_model(arch, tokenizer=tok)
    ids = _batch(tok)
    for input_hook, output_hook in SITES:
        tc = random_transcoders("plt", 3, 32, 8, input_hook=input_hook, output_hook=output_hook)
        rm = ReplacementModel(hf, tok, tc)
        X, Y = harvest(hf, ids, input_hook, output_hook)
        assert X.shape == Y.shape == (3, 3, 9, 32)
        for b in range(ids.shape[0]):
            run = rm.run(ids[b])
            torch.testing.assert_close(X[:, b], run.feature_inputs, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(Y[:, b], run.mlp_outputs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
@pytest.mark.parametrize("kind", ["plt", "clt"])
@pytest.mark.parametrize("sites", [("hook_resid_mid", "hook_mlp_out"), ("mlp.hook_in", "mlp.hook_out")])
def test_replaced_forward_feeds_each_mlp_site_its_reconstruction(arch, kind, sites, tok):
    """In the replaced forward, every MLP output site holds the reconstruction computed from that
    same run's inputs (CLT: the features of all layers <= l), except at BOS, which keeps the real MLP."""
    hf = tiny_model(arch, tokenizer=tok)
    ids = _batch(tok, B=2, T=7)
    tc = random_transcoders(kind, 3, 32, 16, activation="relu", skip=True, input_hook=sites[0], output_hook=sites[1])
    with torch.no_grad(), replaced_mlps(hf, tc):
        logits = hf(input_ids=ids).logits
        X, Y = harvest(hf, ids, tc.input_hook, tc.output_hook)  # sites of the replaced run
    acts = [tc.activate(l, tc.encode(l, X[l])) for l in range(3)]
    expected = torch.stack([tc.reconstruct([a[b] for a in acts], X[:, b]) for b in range(2)], 1)  # (L, B, T, d)
    torch.testing.assert_close(Y[:, :, 1:], expected[:, :, 1:], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(Y[:, :, :1], harvest(hf, ids, tc.input_hook, tc.output_hook)[1][:, :, :1])
    with torch.no_grad():
        assert not torch.allclose(logits, hf(input_ids=ids).logits)
