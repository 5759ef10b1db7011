"""Settings of a transcoder training run.

One dataclass; every field has a one-line docstring (shown by `--help`), and `__post_init__`
rejects impossible settings with a ValueError. Settings that depend on the model (a width larger
than the model allows, a default width) are resolved by `resolve(d_model)` once it is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..transcoders.transcoder import INPUT_HOOKS, OUTPUT_HOOKS, normalize_hook_name

KINDS = ("plt", "clt")
TRAIN_ACTIVATIONS = ("jumprelu", "relu", "topk", "batchtopk")
# Fields that only steer how a run is carried out: a resumed run may change them.
OPERATIONAL = ("checkpoint_every",)
# Settings only some activations read (the others would silently ignore them, so they are refused).
PENALTY_SETTINGS = ("sparsity_coefficient", "sparsity_warmup", "tanh_scale", "pre_act_coefficient", "init_firing")
PENALIZED = ("jumprelu", "relu")  # the activations trained with the sparsity penalty (they read PENALTY_SETTINGS)
THRESHOLD_SETTINGS = ("bandwidth", "init_threshold")  # JumpReLU's learnt threshold only


@dataclass
class TrainConfig:
    kind: str = "plt"
    """'plt': one transcoder per layer; 'clt': cross-layer, features at layer l write to every layer >= l."""

    activation: str = "jumprelu"
    """jumprelu | relu | topk | batchtopk (batchtopk is saved as JumpReLU with calibrated thresholds)."""

    width: int | None = None
    """Features per layer [8 x d_model]."""

    k: int | None = None
    """Active features per token and layer for topk / batchtopk [target_l0]."""

    target_l0: float | None = None
    """Mean active features per token and layer to aim for: steers the sparsity coefficient (jumprelu, relu)."""

    lr: float | None = None
    """Adam learning rate, linear warm-up then cosine decay to 10 % [0.1 / sqrt(d_model): 8.8e-3 at d = 128]."""

    lr_warmup_steps: int = 50
    """Steps of linear learning-rate warm-up."""

    sparsity_coefficient: float = 1e-3
    """lambda of the tanh penalty lambda * sum_i tanh(c * ||W_dec,i|| * a_i) (jumprelu, relu); the start value when target_l0 is set."""

    sparsity_warmup: float = 0.3
    """Fraction of the steps over which lambda ramps up linearly from 0."""

    tanh_scale: float = 4.0
    """c of the tanh penalty."""

    pre_act_coefficient: float = 3e-6
    """lambda_P of the pre-activation loss lambda_P * sum_i relu(theta_i - h_i) * ||W_dec,i|| (jumprelu, relu)."""

    bandwidth: float = 2.0
    """Width epsilon of the rectangle kernel in JumpReLU's straight-through threshold gradient."""

    init_threshold: float = 1.0
    """Initial JumpReLU threshold (pre-activations start with std ~ 1)."""

    init_firing: float = 0.05
    """Initial fraction of tokens each JumpReLU / ReLU feature fires on (sets b_enc from the first batch)."""

    skip: bool = False
    """Learn an affine skip connection W_skip per layer (a skip transcoder)."""

    batch_tokens: int = 4096
    """Tokens per optimizer step, summed over all processes (a multiple of seq_len)."""

    seq_len: int = 64
    """Tokens per sequence, BOS included (position 0 holds BOS and is not trained on)."""

    pack_documents: bool = True
    """Pack documents into full sequences (each after BOS); off: one document per sequence, right-padded."""

    steps: int = 1000
    """Optimizer steps."""

    seed: int = 0
    """Seed of the initialisation and of the batch order."""

    checkpoint_every: int = 200
    """Write a resumable checkpoint every this many steps (0: never)."""

    input_hook: str = "hook_resid_mid"
    """Transcoder input site: hook_resid_mid | ln2.hook_normalized | mlp.hook_in."""

    output_hook: str = "hook_mlp_out"
    """Transcoder output site: hook_mlp_out | mlp.hook_out."""

    eval_tokens: int = 16384
    """Held-out tokens for the metrics (taken from the end of the data, at most 10 % of it)."""

    extra: dict = field(default_factory=dict)
    """Free-form notes stored with the run (not used by training)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.activation not in TRAIN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {TRAIN_ACTIVATIONS}, got {self.activation!r}")
        if self.width is not None and self.width < 1:
            raise ValueError(f"width must be at least 1 feature per layer, got {self.width}")
        if self.k is not None and self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.target_l0 is not None and not self.target_l0 > 0:
            raise ValueError(f"target_l0 must be positive, got {self.target_l0}")
        self._check_applicable()
        if self.activation in ("topk", "batchtopk"):
            if self.k is None and self.target_l0 is None:
                raise ValueError(f"{self.activation} needs k (or target_l0)")
            if self.k is None:
                self.k = max(1, round(self.target_l0))
        self._check_reachable(self.width)
        positive = {"lr": 1.0 if self.lr is None else self.lr, "tanh_scale": self.tanh_scale,
                    "bandwidth": self.bandwidth, "init_threshold": self.init_threshold}  # fmt: skip
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name in ("sparsity_coefficient", "pre_act_coefficient"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.sparsity_warmup <= 1:
            raise ValueError(f"sparsity_warmup is a fraction of the steps in [0, 1], got {self.sparsity_warmup}")
        if not 0 < self.init_firing < 1:
            raise ValueError(f"init_firing is a fraction in (0, 1), got {self.init_firing}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be at least 2 (BOS + one token), got {self.seq_len}")
        if self.batch_tokens < self.seq_len or self.batch_tokens % self.seq_len:
            raise ValueError(
                f"batch_tokens ({self.batch_tokens}) must be a positive multiple of seq_len ({self.seq_len})"
            )
        for name in ("steps",):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr_warmup_steps", "checkpoint_every", "eval_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.input_hook = normalize_hook_name(self.input_hook, INPUT_HOOKS, "input")
        self.output_hook = normalize_hook_name(self.output_hook, OUTPUT_HOOKS, "output")

    def _check_applicable(self) -> None:
        """Refuse settings this activation would ignore (a value other than the default counts as set)."""
        act, defaults = self.activation, {f.name: f.default for f in dataclasses.fields(self)}

        def flags(names) -> str:  # "x (--x 1) only applies", "x (--x 1), y (--y 2) only apply"
            listed = ", ".join(f"{n} (--{n.replace('_', '-')} {getattr(self, n)})" for n in names)
            return listed + (" only applies" if len(names) == 1 else " only apply")

        if act in PENALIZED and self.k is not None:
            raise ValueError(
                f"k (--k {self.k}) sets the active features of topk / batchtopk; {act} ignores it: "
                f"set its sparsity with target_l0 (--target-l0 {self.k}), or choose --activation topk / batchtopk"
            )
        if act not in PENALIZED:
            ignored = [n for n in PENALTY_SETTINGS if getattr(self, n) != defaults[n]]
            if ignored:
                raise ValueError(
                    f"{flags(ignored)} to the sparsity penalty of {' / '.join(PENALIZED)}; "
                    f"{act} keeps k features per token instead: leave {'it' if len(ignored) == 1 else 'them'} out"
                )
            if self.k is not None and self.target_l0 is not None and self.k != max(1, round(self.target_l0)):
                raise ValueError(
                    f"k = {self.k} and target_l0 = {self.target_l0} disagree; for {act}, target_l0 only stands in "
                    "for k: give one of them"
                )
        if act != "jumprelu":
            ignored = [n for n in THRESHOLD_SETTINGS if getattr(self, n) != defaults[n]]
            if ignored:
                raise ValueError(
                    f"{flags(ignored)} to jumprelu's learnt threshold; {act} has none: "
                    f"leave {'it' if len(ignored) == 1 else 'them'} out"
                )

    def _check_reachable(self, width: int | None) -> None:
        if width is None:
            return
        if self.k is not None and self.k > width:
            raise ValueError(f"k = {self.k} active features cannot be reached with width {width}; lower k or widen")
        if self.target_l0 is not None and self.target_l0 > width:
            raise ValueError(
                f"target_l0 = {self.target_l0} cannot be reached with width {width} features per layer; "
                "lower the target or widen"
            )

    @property
    def sequences_per_batch(self) -> int:
        return self.batch_tokens // self.seq_len

    def resolve(self, d_model: int) -> TrainConfig:
        """A copy with the model-dependent defaults filled in (width 8 x d_model, lr 0.1 / sqrt(d_model))."""
        # Parameters are trained in units where E|x|^2 = d, so encoder rows have norm ~1 and entries
        # ~1/sqrt(d): the learning rate scales the same way (1e-2 was best at d = 128, see the report).
        out = dataclasses.replace(self, width=self.width or 8 * d_model, lr=self.lr or 0.1 / d_model**0.5)
        out._check_reachable(out.width)
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}")
        return cls(**data)

    def differences(self, other: TrainConfig) -> list[str]:
        """'field: mine != other' for every field (except OPERATIONAL ones) that differs."""
        out = []
        for f in dataclasses.fields(self):
            if f.name in OPERATIONAL:
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{f.name}: {a!r} != {b!r}")
        return out
