"""Write the benchmark fixtures: a local random Llama, its tokenizer, and PLT + CLT transcoders.

    python bench/make_fixtures.py [--sizes small big big-t16 big-t256 big-t1024] [--force]

(SmolLM2 and the toy world: bench/fixtures_real.py, the same layout.)

Everything goes under bench/work/<size>/ (gitignored):

    model/                  HF model dir (transformers 5 writes it; patched so transformers 4.57,
                            which circuit-tracer's TransformerLens backend uses, loads it too)
    transcoders/<kind>.safetensors + <kind>.json
                            our layout: the tensors of circuit_atlas.transcoders.Transcoders,
                            keys W_enc.{l}, b_enc.{l}, threshold.{l}, W_dec.{l} (F, n_out, d), b_dec.{l}
    atlas/<kind>/           the same set written by circuit_atlas.transcoders.io (when that module exists)
    ct_cache/local/bench-<size>-<kind>/
                            circuit-tracer's own cache layout; with CIRCUIT_TRACER_CACHE_DIR=ct_cache,
                            load_transcoder_from_hub("local/bench-<size>-<kind>") loads it offline
    manifest.json           sizes, seed, prompt ids, per-layer L0, threshold margins, paths

The directory names avoid "llama"/"gemma": TransformerLens maps any name containing them to its
hard-coded configs. Thresholds are calibrated on the prompt so that no pre-activation sits within
0.05 std of its threshold (circuit_tracer.md §12) and mean L0 matches the target.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
SEED = 1234
MARGIN = 0.05  # in units of the layer's pre-activation std

SIZES = {
    # target_active: mean number of active (layer, pos>=1, feature) over the prompt
    "small": dict(
        n_layers=4,
        d_model=128,
        n_heads=4,
        n_kv_heads=2,
        d_mlp=512,
        n_features=1024,
        vocab=512,
        n_tokens=12,
        target_active={"plt": 736, "clt": 671},
    ),
    "big": dict(
        n_layers=8,
        d_model=512,
        n_heads=8,
        n_kv_heads=4,
        d_mlp=2048,
        n_features=8192,
        vocab=2048,
        n_tokens=64,
        target_active={"plt": 13075, "clt": 13075},
    ),
}
# The scaling series (bench/attribution.py --scaling): the `big` model and tokenizer exactly (same seed; the
# prompt of n tokens is a prefix-consistent draw of distinct words), with transcoders recalibrated on
# each prompt so the active count per (layer, position) stays that of `big` (~26).
for _n in (16, 256, 1024):
    SIZES[f"big-t{_n}"] = dict(
        SIZES["big"], n_tokens=_n, target_active={k: round(13075 * (_n - 1) / 63) for k in ("plt", "clt")}
    )
# The `smollm2` size's prompt (bench/fixtures_real.py: SmolLM2-135M-Instruct with random transcoders
# calibrated on it, 8,192 features per layer, L0 ~ 50 per (layer, position), the middle of circuit-tracer's
# trained transcoders, tens to ~100).
SMOLLM2_TEXT = (
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a small brass lamp "
    "and a notebook in which he recorded the wind, the colour of the sea and the ships that passed the rocks "
    "below. One winter night a storm broke the great lens, and for three days the coast was dark until the "
    "people of the village rowed out with candles, oil and every mirror they owned."
)
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
INPUT_HOOK, OUTPUT_HOOK = "hook_resid_mid", "hook_mlp_out"


def log(msg: str) -> None:
    print(f"[fixtures] {msg}", flush=True)


# --- tokenizer --------------------------------------------------------------------------------
def make_words(n: int, gen: torch.Generator) -> list[str]:
    """n distinct pronounceable pseudo-words, deterministic in `gen`."""
    cons, vows = "bcdfghklmnprstvz", "aeiou"
    words: list[str] = []
    seen = set()
    while len(words) < n:
        n_syl = int(torch.randint(1, 4, (1,), generator=gen))
        w = "".join(
            cons[int(torch.randint(len(cons), (1,), generator=gen))]
            + vows[int(torch.randint(len(vows), (1,), generator=gen))]
            for _ in range(n_syl)
        )
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def write_tokenizer(model_dir: Path, vocab_size: int, gen: torch.Generator) -> list[str]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = make_words(vocab_size - len(SPECIALS), gen)
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for w in words:
        vocab["\u2581" + w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.add_special_tokens(SPECIALS)
    tok.save(str(model_dir / "tokenizer.json"))
    # Written by hand so that transformers 4.57 and 5 both read it (§12: tokenizer_class must be
    # PreTrainedTokenizerFast for 4.57).
    (model_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
                "add_bos_token": False,
                "add_eos_token": False,
                "clean_up_tokenization_spaces": False,
                "model_max_length": 1024,
            },
            indent=2,
        )
    )
    (model_dir / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
            },
            indent=2,
        )
    )
    return words


# --- model ------------------------------------------------------------------------------------
def write_model(model_dir: Path, cfg: dict) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    d = cfg["d_model"]
    config = LlamaConfig(
        vocab_size=cfg["vocab"],
        hidden_size=d,
        intermediate_size=cfg["d_mlp"],
        num_hidden_layers=cfg["n_layers"],
        num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg["n_kv_heads"],
        max_position_embeddings=max(256, cfg["n_tokens"]),
        rms_norm_eps=1e-5,
        initializer_range=d**-0.5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        rope_theta=10000.0,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # non-trivial norm gains, so a missing gain shows up as a mismatch
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    model.save_pretrained(model_dir, safe_serialization=True)
    # §12: transformers 4.57 needs a top-level rope_theta (transformers 5 nests it in rope_parameters).
    path = model_dir / "config.json"
    conf = json.loads(path.read_text())
    conf["rope_theta"] = 10000.0
    conf.setdefault("torch_dtype", "float32")
    path.write_text(json.dumps(conf, indent=2))


@torch.no_grad()
def resid_mid(model_dir: Path, input_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, T, d) residual stream after attention (the transcoders' input site) and the (T, V)
    logits, via an HF forward (the logits let each engine check it loaded the same model)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    cache = {}
    hooks = [
        layer.post_attention_layernorm.register_forward_hook(
            lambda mod, args, out, l=l: cache.__setitem__(l, args[0][0].detach().clone())
        )
        for l, layer in enumerate(model.model.layers)
    ]
    logits = model(torch.tensor([input_ids])).logits[0].float()
    for h in hooks:
        h.remove()
    return torch.stack([cache[l] for l in range(len(model.model.layers))]), logits


# --- transcoders ------------------------------------------------------------------------------
def calibrate(pre: torch.Tensor, target_per_pos: float, gen: torch.Generator, margin: float) -> torch.Tensor:
    """Per-feature thresholds for pre-activations pre (T, F), BOS row included.

    Thresholds are a per-layer level times a log-normal jitter, bisected so that the mean number
    of active features over positions >= 1 is `target_per_pos`; then each threshold that sits
    within `margin` of any pre-activation is moved up just past it (and past the values near that
    one, and so on), so the prompt has no near-threshold feature.
    """
    T, F = pre.shape
    jitter = torch.exp(0.15 * torch.randn(F, generator=gen))
    # A threshold within `margin` of a value moves up past the run of values spaced < 2 margin apart that
    # holds it (the values of one feature, sorted): run_end[f, i] is the largest value of v[f, i]'s run.
    v = pre.T.sort(dim=1).values.contiguous()  # (F, T)
    ends = torch.cat([v[:, 1:] - v[:, :-1] > 2.0002 * margin, torch.ones(F, 1, dtype=torch.bool)], 1)
    idx = torch.arange(T).expand(F, T)
    next_end = torch.where(ends, idx, T).flip(1).cummin(1).values.flip(1)  # (F, T) index of i's run end
    run_end = v.gather(1, next_end)

    def thresholds(level: float) -> torch.Tensor:
        th = level * jitter
        i = torch.searchsorted(v, (th - margin)[:, None].contiguous(), right=True).clamp(max=T - 1)  # first > th - m
        close = (v.gather(1, i)[:, 0] - th).abs() < margin
        return torch.where(close, run_end.gather(1, i)[:, 0] + margin * 1.0001, th)

    def active(level: float) -> float:
        return float((pre[1:] > thresholds(level)).sum()) / (pre.shape[0] - 1)

    lo, hi = 1e-4 * float(pre.abs().max()), float(pre.abs().max()) * 2
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if active(mid) > target_per_pos:
            lo = mid
        else:
            hi = mid
    # pick whichever bracket end is closer to the target
    level = lo if abs(active(lo) - target_per_pos) < abs(active(hi) - target_per_pos) else hi
    return thresholds(level)


def make_transcoders(kind: str, cfg: dict, mids: torch.Tensor, gen: torch.Generator) -> dict:
    L, T, d = mids.shape
    F = cfg["n_features"]
    target_per_pos = cfg["target_active"][kind] / (L * (T - 1))
    tc = {"W_enc": [], "b_enc": [], "threshold": [], "W_dec": [], "b_dec": []}
    stats = []
    for l in range(L):
        W_enc = torch.randn(F, d, generator=gen) / math.sqrt(d)
        b_enc = 0.05 * torch.randn(F, generator=gen)
        pre = mids[l] @ W_enc.T + b_enc  # (T, F)
        std = float(pre[1:].std())
        th = calibrate(pre, target_per_pos, gen, MARGIN * std)
        n_out = 1 if kind == "plt" else L - l
        W_dec = torch.randn(F, n_out, d, generator=gen) * (0.5 / math.sqrt(d * max(target_per_pos, 1)))
        b_dec = 0.02 * torch.randn(d, generator=gen)
        gap = float((pre - th).abs().min() / std)
        n_act = int((pre[1:] > th).sum())
        stats.append({"layer": l, "active": n_act, "min_gap_std": round(gap, 4), "pre_std": std})
        for k, v in zip(tc, (W_enc, b_enc, th, W_dec, b_dec)):
            tc[k].append(v.contiguous())
    return {"tensors": tc, "stats": stats}


def save_ours(path: Path, kind: str, tc: dict) -> None:
    tensors = {f"{k}.{l}": v for k, vs in tc.items() for l, v in enumerate(vs)}
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "kind": kind,
                "activation": "jumprelu",
                "n_layers": len(tc["W_enc"]),
                "input_hook": INPUT_HOOK,
                "output_hook": OUTPUT_HOOK,
            },
            indent=2,
        )
    )


def save_circuit_tracer(cache: Path, name: str, kind: str, tc: dict) -> Path:
    """circuit-tracer's cache layout (§1.4, §12), written by hand so we need nothing of theirs."""
    import yaml

    out = cache / "local" / name
    out.mkdir(parents=True, exist_ok=True)
    L = len(tc["W_enc"])
    if kind == "plt":
        for l in range(L):
            save_file(
                {
                    "W_enc": tc["W_enc"][l],
                    "W_dec": tc["W_dec"][l][:, 0].contiguous(),
                    "b_enc": tc["b_enc"][l],
                    "b_dec": tc["b_dec"][l],
                    "activation_function.threshold": tc["threshold"][l],
                },
                str(out / f"layer_{l}.safetensors"),
            )
        model_kind = "transcoder_set"
    else:
        for l in range(L):
            save_file(
                {
                    f"W_enc_{l}": tc["W_enc"][l],
                    f"b_enc_{l}": tc["b_enc"][l],
                    f"b_dec_{l}": tc["b_dec"][l],
                    f"threshold_{l}": tc["threshold"][l],
                },
                str(out / f"W_enc_{l}.safetensors"),
            )
            save_file({f"W_dec_{l}": tc["W_dec"][l]}, str(out / f"W_dec_{l}.safetensors"))
        model_kind = "cross_layer_transcoder"
    # config.yaml last: circuit-tracer treats it as the completeness marker
    (out / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model_kind": model_kind,
                "feature_input_hook": INPUT_HOOK,
                "feature_output_hook": OUTPUT_HOOK,
                "scan": f"local/{name}",
            }
        )
    )
    return out


def save_atlas(out: Path, kind: str, tc: dict) -> str | None:
    """Write with circuit_atlas.transcoders.io if that module exists yet (else None)."""
    try:
        sys.path.insert(0, str(BENCH.parent))
        from circuit_atlas.transcoders import Transcoders
        from circuit_atlas.transcoders import io as tio
    except Exception as exc:  # the io module is written in parallel
        log(f"  circuit_atlas.transcoders.io not available ({type(exc).__name__}: {exc}); skipping atlas/ copy")
        return None
    obj = Transcoders(
        kind=kind, activation="jumprelu", input_hook=INPUT_HOOK, output_hook=OUTPUT_HOOK, name=f"bench-{kind}", **tc
    )
    for fn in ("save_transcoders", "save"):
        if hasattr(tio, fn):
            getattr(tio, fn)(obj, str(out))
            return str(out)
    log("  circuit_atlas.transcoders.io has no save_transcoders(); skipping atlas/ copy")
    return None


def random_kind(root: Path, size: str, kind: str, cfg: dict, mids: torch.Tensor, gen: torch.Generator) -> dict:
    """Random `kind` transcoders calibrated on the prompt's `mids`, written in our layout, circuit-tracer's
    and ours via circuit_atlas (under root); returns the manifest's entry for them."""
    log(
        f"{size}: {kind.upper()} transcoders, {cfg['n_features']} features/layer, target {cfg['target_active'][kind]} active"
    )
    made = make_transcoders(kind, cfg, mids, gen)
    tc = made["tensors"]
    tdir, cache = root / "transcoders", root / "ct_cache"
    tdir.mkdir(parents=True, exist_ok=True)
    save_ours(tdir / kind, kind, tc)
    name = f"bench-{size}-{kind}"
    ct_dir = save_circuit_tracer(cache, name, kind, tc)
    atlas_dir = save_atlas(root / "atlas" / kind, kind, tc)
    active = sum(s["active"] for s in made["stats"])
    min_gap = min(s["min_gap_std"] for s in made["stats"])
    log(
        f"  {active} active features (per layer {[s['active'] for s in made['stats']]}), "
        f"closest pre-activation {min_gap:.3f} std from its threshold"
    )
    return {
        "ours": str((tdir / kind).with_suffix(".safetensors").relative_to(root)),
        "atlas": None if atlas_dir is None else str(Path(atlas_dir).relative_to(root)),
        "ct_cache": str(cache.relative_to(root)),
        "ct_ref": f"local/{name}",
        "ct_dir": str(ct_dir.relative_to(root)),
        "active_features": active,
        "layers": made["stats"],
    }


def build(size: str, force: bool = False) -> dict:
    cfg = SIZES[size]
    root = WORK / size
    manifest_path = root / "manifest.json"
    if manifest_path.exists() and not force:
        log(f"{size}: fixtures exist ({manifest_path}); use --force to rebuild")
        return json.loads(manifest_path.read_text())
    t0 = time.time()
    model_dir, tdir, cache = root / "model", root / "transcoders", root / "ct_cache"
    for p in (model_dir, tdir, cache):
        p.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(SEED)

    log(
        f"{size}: tokenizer ({cfg['vocab']} tokens) and random Llama "
        f"({cfg['n_layers']} layers, d_model {cfg['d_model']}) -> {model_dir}"
    )
    words = write_tokenizer(model_dir, cfg["vocab"], gen)
    write_model(model_dir, cfg)

    idx = torch.randperm(len(words), generator=gen)[: cfg["n_tokens"] - 1]
    prompt = " ".join(words[i] for i in idx.tolist())
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    input_ids = [SPECIALS.index("<bos>")] + tok.encode(prompt, add_special_tokens=False).ids
    assert len(input_ids) == cfg["n_tokens"], (len(input_ids), cfg["n_tokens"])

    log(f"{size}: clean forward for calibration ({len(input_ids)} tokens)")
    mids, logits = resid_mid(model_dir, input_ids)
    save_file({"logits": logits.contiguous(), "resid_mid": mids.contiguous()}, str(root / "reference.safetensors"))

    kinds = {kind: random_kind(root, size, kind, cfg, mids, gen) for kind in ("plt", "clt")}

    manifest = {
        "size": size,
        "seed": SEED,
        "margin_std": MARGIN,
        "config": cfg,
        "model_dir": "model",
        "reference": "reference.safetensors",
        "prompt": prompt,
        "input_ids": input_ids,
        "input_hook": INPUT_HOOK,
        "output_hook": OUTPUT_HOOK,
        "kinds": kinds,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.time() - t0, 1),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    log(f"{size}: done in {time.time() - t0:.1f}s -> {manifest_path}")
    return manifest


def fixtures_cli(doc: str, sizes: list[str], default: list[str], build_size) -> None:
    """The command line of a fixtures script: --sizes (of `sizes`) and --force, then build_size(size, force)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=default, choices=sizes)
    ap.add_argument("--force", action="store_true", help="rebuild even if the manifest exists")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    for size in args.sizes:
        build_size(size, force=args.force)


def main() -> None:
    fixtures_cli(__doc__, list(SIZES), ["small", "big"], build)


if __name__ == "__main__":
    main()
