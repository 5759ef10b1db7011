"""Benchmark fixtures on real models: SmolLM2-135M and the shipped toy world.

    python bench/fixtures_real.py [--sizes smollm2 smollm2-t16 ... toyworld-t1024] [--force]

    smollm2            SmolLM2-135M-Instruct, a 64-token English prompt, a random PLT (8,192 features per
                       layer) calibrated to L0 ~ 50 per layer and position
    smollm2-t{N}       the same model and transcoder shape on the first N tokens of the Debian Reference
                       (one text for every N, so the prompts are prefixes of each other), recalibrated per N
    toyworld-t{N}      the shipped toy world (4 layers, d 128) with its trained PLT (1,024 features per layer,
                       skip connection, JumpReLU) on N tokens of toy-world sentences

Each writes bench/work/<size>/ in the layout of make_fixtures.build (manifest.json, model/, reference
logits, our transcoders, circuit-tracer's cache layout). PLT only: a 30-layer CLT of SmolLM2 would be 9 GB,
and circuit-tracer never loads a CLT's skip matrix, so the toy world's CLT would be a different model there.

The toy world was trained on documents of at most 32 tokens and its config says 64 positions. RoPE has no
learned positions, so the copy here states max(64, N) positions and the same weights run on longer prompts;
what they compute there is out of distribution, which does not matter to a timing (attribution is exact for
whatever the model computes; the error nodes take what the transcoders miss). For the same reason the copy
of the transcoders drops their recorded FVU, which circuit-atlas would otherwise use to refuse prompts they
reconstruct far worse than on their training data.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import make_fixtures as F
import torch
from safetensors.torch import save_file

REPO = F.BENCH.parent
SMOLLM2 = dict(n_features=8192, l0=50)
SMOLLM2_SERIES = (16, 64, 256, 1024)
TOYWORLD_SERIES = (16, 64, 256, 1024)


def real_sizes() -> list[str]:
    return ["smollm2", *(f"smollm2-t{n}" for n in SMOLLM2_SERIES), *(f"toyworld-t{n}" for n in TOYWORLD_SERIES)]


def build_real(size: str, force: bool = False) -> dict:
    root = F.WORK / size
    manifest_path = root / "manifest.json"
    if manifest_path.exists() and not force:
        F.log(f"{size}: fixtures exist ({manifest_path}); use --force to rebuild")
        return json.loads(manifest_path.read_text())
    t0 = time.time()
    if size.startswith("toyworld-t"):
        manifest = _toyworld(root, int(size.removeprefix("toyworld-t")))
    else:
        manifest = _smollm2(root, None if size == "smollm2" else int(size.removeprefix("smollm2-t")))
    manifest |= {
        "size": size,
        "seed": F.SEED,
        "margin_std": F.MARGIN,
        "model_dir": "model",
        "reference": "reference.safetensors",
        "input_hook": F.INPUT_HOOK,
        "output_hook": F.OUTPUT_HOOK,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.time() - t0, 1),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    F.log(f"{size}: done in {time.time() - t0:.1f}s -> {manifest_path}")
    return manifest


def _reference(root: Path, input_ids: list[int]) -> torch.Tensor:
    """The HF forward's residual stream at the transcoders' input (L, T, d); its logits go to disk so each
    engine can check it loaded the same model."""
    mids, logits = F.resid_mid(root / "model", input_ids)
    save_file({"logits": logits.contiguous(), "resid_mid": mids.contiguous()}, str(root / "reference.safetensors"))
    return mids


# --- SmolLM2-135M --------------------------------------------------------------------------------
def linked_model_dir(src: Path, out: Path, config: dict) -> Path:
    """`out`: the files of the HF model folder `src`, linked, with `config` as config.json and a
    tokenizer_config.json that transformers 4.57 (circuit-tracer's TransformerLens) reads too: transformers 5
    names its tokenizer class TokenizersBackend, 4.57 knows it as PreTrainedTokenizerFast."""
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        dst = out / f.name
        if f.name in ("config.json", "tokenizer_config.json") or dst.exists():
            continue
        dst.symlink_to(f)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tok_conf = json.loads((src / "tokenizer_config.json").read_text())
    tok_conf["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").unlink(missing_ok=True)
    (out / "tokenizer_config.json").write_text(json.dumps(tok_conf, indent=2))
    return out


def smollm2_model_dir(root: Path) -> Path:
    """The converted SmolLM2 files, with the top-level rope_theta transformers 4.57 reads."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests" / "real"))
    from models import real_model_dir  # tests/real/models.py: finds the wheel, converts once, caches

    src = real_model_dir("smollm2")
    conf = json.loads((src / "config.json").read_text())
    rope = conf.get("rope_parameters") or {}
    conf.setdefault("rope_theta", rope.get("rope_theta", 100000.0))
    conf.setdefault("torch_dtype", "float32")
    return linked_model_dir(src, root / "model", conf)


def _smollm2(root: Path, n_tokens: int | None) -> dict:
    """`n_tokens` None: the 64-token `smollm2` prompt (F.SMOLLM2_TEXT); else the Debian Reference's first tokens."""
    model_dir = smollm2_model_dir(root)
    from transformers import AutoConfig, AutoTokenizer

    hf_cfg = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if n_tokens is None:
        n_tokens, text = 64, F.SMOLLM2_TEXT
    else:
        from corpus import debian_reference_text  # tests/real/corpus.py (on the path since smollm2_model_dir)

        text = debian_reference_text().read_text()[: 12 * n_tokens]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    input_ids = [bos] + ids[: n_tokens - 1]
    assert len(input_ids) == n_tokens, (len(input_ids), n_tokens)
    F.log(f"{root.name}: clean forward for calibration ({len(input_ids)} tokens) from {model_dir}")
    mids = _reference(root, input_ids)
    L, d = hf_cfg.num_hidden_layers, hf_cfg.hidden_size
    cfg = dict(
        n_layers=L,
        d_model=d,
        n_features=SMOLLM2["n_features"],
        n_tokens=n_tokens,
        vocab=hf_cfg.vocab_size,
        n_heads=hf_cfg.num_attention_heads,
        n_kv_heads=hf_cfg.num_key_value_heads,
        d_mlp=hf_cfg.intermediate_size,
        target_active={"plt": SMOLLM2["l0"] * L * (n_tokens - 1)},
    )
    plt = F.random_kind(root, root.name, "plt", cfg, mids, torch.Generator().manual_seed(F.SEED))
    return {"config": cfg, "prompt": tok.decode(input_ids[1:]), "input_ids": input_ids, "kinds": {"plt": plt}}


# --- the toy world -------------------------------------------------------------------------------
def _toyworld(root: Path, n_tokens: int) -> dict:
    from circuit_atlas.toyworld.corpus import generate_corpus
    from circuit_atlas.transcoders.io import load_transcoders, save_circuit_tracer_format, save_transcoders

    zoo = REPO / "circuit_atlas" / "zoo" / "toyworld"
    conf = json.loads((zoo / "model" / "config.json").read_text())
    conf["max_position_embeddings"] = max(conf.get("max_position_embeddings", 64), n_tokens)
    out = linked_model_dir(zoo / "model", root / "model", conf)

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    # toy-world sentences one after another until the prompt is long enough (the same draw for every N)
    ids: list[int] = []
    for doc in generate_corpus(seed=F.SEED, n_sentences=4 * n_tokens):
        ids += tok(" " + doc.strip(), add_special_tokens=False)["input_ids"]
        if len(ids) >= n_tokens - 1:
            break
    input_ids = [tok.bos_token_id] + ids[: n_tokens - 1]
    assert len(input_ids) == n_tokens, (len(input_ids), n_tokens)
    F.log(f"{root.name}: clean forward ({n_tokens} tokens) of the toy world")
    mids = _reference(root, input_ids)

    tc = load_transcoders(zoo / "plt")
    with torch.no_grad():  # active (layer, position >= 1, feature) of the prompt, as both engines count them
        per_layer = [int((tc.activate(l, tc.encode(l, mids[l, 1:])) != 0).sum()) for l in range(tc.n_layers)]
    tc.metadata = {
        k: v
        for k, v in tc.metadata.items()
        if k not in ("fvu", "fvu_mean", "metrics", "training", "model", "model_name")
    }
    tc.name = f"bench-{root.name}-plt"
    atlas = save_transcoders(tc, root / "atlas" / "plt")
    cache = root / "ct_cache"
    ct_dir = save_circuit_tracer_format(tc, cache / "local" / tc.name)
    cfg = dict(
        n_layers=tc.n_layers,
        d_model=tc.d_model,
        n_features=tc.width(0),
        n_tokens=n_tokens,
        vocab=conf["vocab_size"],
        n_heads=conf["num_attention_heads"],
        n_kv_heads=conf["num_key_value_heads"],
        d_mlp=conf["intermediate_size"],
    )
    plt = {
        "ours": None,
        "atlas": str(Path(atlas).relative_to(root)),
        "ct_cache": str(cache.relative_to(root)),
        "ct_ref": f"local/{tc.name}",
        "ct_dir": str(Path(ct_dir).relative_to(root)),
        "active_features": sum(per_layer),
        "layers": [{"layer": l, "active": a} for l, a in enumerate(per_layer)],
        "trained": True,  # the zoo's transcoders as trained: no calibration
    }
    return {"config": cfg, "prompt": tok.decode(input_ids[1:]), "input_ids": input_ids, "kinds": {"plt": plt}}


def main() -> None:
    F.fixtures_cli(__doc__, real_sizes(), ["smollm2"], build_real)


if __name__ == "__main__":
    main()
