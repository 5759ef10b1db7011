"""A Hugging Face causal LM paired with transcoders: the object attribution works on.

The HF model is composed, never subclassed, and never modified: its weights are read into a
uniform layout (models/weights.py; shared where dtype and device already match, copied where
not) and our explicit forward (models/layers.py) reproduces its logits and records what
attribution freezes.

Dtypes. `dtype` is the dtype the weights are held in; `compute_dtype` (default: `dtype`) is the
dtype of every computed value: residual stream, attention patterns, norm scales, feature
activations, cotangents, graph edges before they are stored. bf16 or fp16 weights with
compute_dtype=torch.float32 keep the model at half the memory while every sum accumulates and
every result is rounded in float32: each weight matrix is cast to float32 at its product
(models/linear.py), one at a time. Norm gains and the transcoders (whose rows attribution reads
directly) are held in the compute dtype.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from .models.architectures import Architecture, architecture_for
from .models.forward import CleanRun, clean_forward
from .models.frozen import FrozenModel
from .models.weights import ModelWeights, read_weights
from .transcoders import Transcoders
from .transcoders.match import check_reconstruction, check_recorded_model, check_recorded_name

# Files that hold a tokenizer's vocabulary; a directory with none of them gets an *empty* tokenizer
# from transformers (every prompt becomes zero tokens), so we refuse it at load.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                   "vocab.txt", "tekken.json")  # fmt: skip


def load_tokenizer(model_dir: str | Path):
    """AutoTokenizer of a local model directory, refusing one without vocabulary files."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    found = [f for f in TOKENIZER_FILES if (model_dir / f).is_file()] + [p.name for p in model_dir.glob("*.tiktoken")]
    if not found:
        raise ValueError(
            f"{str(model_dir)!r} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); save the "
            "tokenizer beside the model (tokenizer.save_pretrained(dir)) or copy its files there"
        )
    if (
        (model_dir / "vocab.json").is_file()
        and "tokenizer.json" not in found
        and not (model_dir / "merges.txt").is_file()
    ):
        raise ValueError(
            f"{str(model_dir)!r} has vocab.json but no merges.txt (nor tokenizer.json); copy the tokenizer's "
            "merges.txt there, or save the tokenizer with tokenizer.save_pretrained(dir)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{str(model_dir)!r} has tokenizer files ({', '.join(found)}) that do not load ({err})"
        ) from err
    if len(tokenizer) < 2:
        raise ValueError(
            f"the tokenizer in {str(model_dir)!r} is empty ({len(tokenizer)} tokens from {', '.join(found)}); "
            "save the model's real tokenizer there with tokenizer.save_pretrained(dir)"
        )
    return tokenizer


def _model_type(hf_model: nn.Module) -> str:
    config = getattr(hf_model, "config", None)
    if config is None or not hasattr(config, "model_type"):
        raise ValueError(
            f"{type(hf_model).__name__} has no Hugging Face config; pass a transformers causal LM "
            "(e.g. from AutoModelForCausalLM.from_pretrained)"
        )
    return config.model_type


class ReplacementModel:
    """A causal LM whose MLPs are read through transcoders (see API in the README)."""

    def __init__(
        self,
        hf_model: nn.Module,
        tokenizer,
        transcoders: Transcoders,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        name: str | None = None,
        allow_model_mismatch: bool = False,
        compute_dtype: torch.dtype | None = None,
    ):
        self.architecture: Architecture = architecture_for(_model_type(hf_model))
        self.hf_model = hf_model  # kept as given: never cast, moved or switched to eval
        self.tokenizer = tokenizer
        self.weight_dtype = dtype or next(hf_model.parameters()).dtype
        self.dtype = compute_dtype or self.weight_dtype  # the dtype of every result
        for role, dt in (("dtype", self.weight_dtype), ("compute_dtype", self.dtype)):
            if not (isinstance(dt, torch.dtype) and dt.is_floating_point):
                raise ValueError(f"{role} must be a floating-point torch.dtype (e.g. torch.bfloat16), got {dt!r}")
        if torch.finfo(self.dtype).bits < torch.finfo(self.weight_dtype).bits:
            raise ValueError(
                f"compute_dtype {self.dtype} is narrower than the weights' dtype {self.weight_dtype}; "
                "compute in the weights' dtype or wider (e.g. dtype=torch.bfloat16, compute_dtype=torch.float32)"
            )
        self.device = torch.device(device) if device is not None else next(hf_model.parameters()).device
        self.weights: ModelWeights = read_weights(
            hf_model, self.architecture, self.weight_dtype, self.device, compute_dtype=self.dtype
        )
        self.name = name or getattr(hf_model.config, "_name_or_path", "") or self.architecture.name
        if transcoders.n_layers != self.weights.n_layers:
            raise ValueError(
                f"transcoders have {transcoders.n_layers} layers but the model has {self.weights.n_layers}; "
                "use transcoders trained for this model"
            )
        if transcoders.d_model != self.weights.d_model:
            raise ValueError(
                f"transcoders read vectors of size {transcoders.d_model} but the model's d_model is "
                f"{self.weights.d_model}; use transcoders trained for this model"
            )
        # Transcoders of another model with the same shapes run "fine" and explain nothing: refuse them.
        self.allow_model_mismatch = allow_model_mismatch
        if not allow_model_mismatch:
            names = [self.name, getattr(hf_model.config, "_name_or_path", "") or ""]
            check_recorded_model(transcoders, self, [n for n in names if n])
        # A shallow copy, so the caller's Transcoders object keeps its own tensors, dtype and device.
        self.transcoders = dataclasses.replace(transcoders).to(self.device, self.dtype)

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        transcoders: str | Path | Transcoders,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        allow_model_mismatch: bool = False,
        compute_dtype: torch.dtype | None = None,
    ) -> ReplacementModel:
        """Load a local HF model directory (or a .gguf file) and a transcoder directory (any supported format).

        dtype: the weights' dtype (default float32), loaded straight into it; compute_dtype: see the module
        docstring (e.g. dtype=torch.bfloat16, compute_dtype=torch.float32).

        Shipped names work too: `from_pretrained("toyworld", "toyworld-clt")`, and Hugging Face Hub ids
        (`"google/gemma-2-2b"`, `"mntss/gemma-scope-transcoders@main"`), downloaded or found in the Hub cache.
        Transcoders recorded as trained on another model (transcoders/match.py) are refused unless
        allow_model_mismatch=True.
        """
        from transformers import AutoConfig, AutoModelForCausalLM

        from .models.gguf import gguf_model_dir, is_gguf
        from .models.hub import hub_model_dir, hub_transcoders_dir, looks_like_hub_id
        from .zoo import resolve_model, resolve_transcoders

        model_dir = resolve_model(model)
        if looks_like_hub_id(str(model)) and not model_dir.exists():  # owner/repo[@rev]: Hub cache or download
            model_dir = hub_model_dir(str(model))
        if is_gguf(model_dir):  # converted once to a Hugging Face folder, cached by sha256
            model_dir = gguf_model_dir(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(
                f"model directory {str(model_dir)!r} does not exist; circuit-atlas loads models from a local "
                "directory written by save_pretrained (config.json, weights, tokenizer files)"
            )
        if not (model_dir / "config.json").is_file():
            raise ValueError(f"{str(model_dir)!r} has no config.json; it is not a Hugging Face model directory")
        config = AutoConfig.from_pretrained(model_dir)
        architecture_for(config.model_type)  # fail early, before loading weights
        tokenizer = load_tokenizer(model_dir)
        if not isinstance(transcoders, Transcoders):
            from .transcoders.io import load_transcoders
            from .zoo import TRANSCODERS as SHIPPED

            shipped = str(transcoders) if str(transcoders) in SHIPPED else None
            tc_path = resolve_transcoders(transcoders)
            if looks_like_hub_id(str(transcoders)) and not tc_path.exists():
                tc_path = hub_transcoders_dir(str(transcoders))
            transcoders = load_transcoders(tc_path)
            if shipped:  # graphs record the set by the name it is loaded by (its dashboards are found by it)
                transcoders.name = shipped
        if not allow_model_mismatch:  # the recorded name, before the weights load (__init__ checks it all)
            check_recorded_name(transcoders, [str(model), str(model_dir)])
        dtype = dtype or torch.float32
        hf_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager")
        return cls(hf_model, tokenizer, transcoders, dtype=dtype, device=device, name=str(model),  # "toyworld" stays
                   allow_model_mismatch=allow_model_mismatch, compute_dtype=compute_dtype)  # fmt: skip

    # --- facts ---------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.weights.n_layers

    @property
    def d_model(self) -> int:
        return self.weights.d_model

    @property
    def vocab_size(self) -> int:
        return self.weights.W_U.shape[0]

    # --- tokens --------------------------------------------------------------------------
    def bos_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id):
            if candidate is not None:
                return int(candidate)
        if tok.all_special_ids:
            return int(tok.all_special_ids[0])
        raise ValueError("the tokenizer has no BOS, pad, EOS or other special token to start the prompt with")

    def tokenize(self, prompt: str | list[int] | torch.Tensor) -> torch.Tensor:
        """Token ids (T,) of a prompt, starting with a BOS (or other special) token."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("the prompt is empty; give some text (or token ids) to attribute")
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        else:
            ids = prompt.tolist() if isinstance(prompt, torch.Tensor) else list(prompt)
            if ids and isinstance(ids[0], list):
                raise ValueError("attribution takes one prompt at a time; pass a 1-D list of token ids")
        if not ids:
            raise ValueError("the prompt is empty; give some text (or token ids) to attribute")
        bad = [i for i in ids if not 0 <= int(i) < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        special = set(self.tokenizer.all_special_ids)
        if int(ids[0]) not in special:
            ids = [self.bos_id()] + [int(i) for i in ids]
        if len(ids) < 2:
            raise ValueError("the prompt has no tokens after BOS; give some text to attribute")
        limit = self.weights.max_positions
        if limit is not None and len(ids) > limit:
            raise ValueError(
                f"the prompt has {len(ids)} tokens (BOS included) but the model's context is {limit}; "
                "shorten the prompt"
            )
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    # --- runs ----------------------------------------------------------------------------
    def run(self, input_ids: torch.Tensor) -> CleanRun:
        """The clean forward; refuses transcoders that reconstruct this prompt far worse than recorded."""
        run = clean_forward(self.weights, input_ids, self.transcoders.input_hook, self.transcoders.output_hook)
        if not self.allow_model_mismatch:
            check_reconstruction(self.transcoders, self.name, run.feature_inputs, run.mlp_outputs)
        return run

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor | str | list[int]) -> torch.Tensor:
        """Clean logits (T, V), soft-capped as the HF model's are."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype != torch.long:
            input_ids = self.tokenize(input_ids)
        return self.run(input_ids).logits

    def activations(self, prompt: str | list[int] | torch.Tensor):
        """Transcoder feature activations on the prompt (a FeatureActivations, sparse per layer)."""
        return self.intervene(prompt, [], mode="free").activations  # no edits: every mode agrees; free is one pass

    def intervene(self, prompt, interventions=(), *, mode="frozen_attention", return_pre_activations: bool = False):
        """Logits and feature activations with features set or scaled (see circuit_atlas.interventions).

        mode: "frozen_attention" (the default, as in circuit-tracer), "free", "constrained" or constrained(layers).
        """
        from .interventions import intervene

        return intervene(self, prompt, interventions, mode=mode, return_pre_activations=return_pre_activations)

    def generate(self, prompt, interventions=(), max_new_tokens: int = 20, temperature: float = 0.0,
                 seed: int | None = None, *, mode="frozen_attention", stop_at_eos: bool = True):  # fmt: skip
        """Continue the prompt under interventions, with the KV cache (see circuit_atlas.interventions)."""
        from .interventions import generate

        return generate(self, prompt, interventions, max_new_tokens, temperature, seed, mode=mode,
                        stop_at_eos=stop_at_eos)  # fmt: skip

    def freeze(self, input_ids: torch.Tensor | str | list[int]) -> FrozenModel:
        """The local replacement model at this prompt (see models/frozen.py)."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype != torch.long:
            input_ids = self.tokenize(input_ids)
        return FrozenModel(self.weights, self.transcoders, self.run(input_ids))
