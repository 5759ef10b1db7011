"""One feature's dashboard as a dataclass: what the reader returns and every view is made from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Example:
    """A context window around one token where the feature is active."""

    tokens: list[str]
    token_ids: list[int]
    acts: list[float]  # the feature's activation on each token of the context
    max_index: int  # position in `tokens` of the example's token (the window's max for top examples)
    value: float  # the activation there
    window: int  # corpus window number (stream order)
    position: int  # position of the token in its window (0 = BOS)
    repeated: bool = False  # the same context already appears earlier in this dashboard

    @property
    def text(self) -> str:
        return "".join(self.tokens)


@dataclass
class Band:
    name: str  # e.g. "Top activations", "Quantile 75-100%"
    low: float  # activation range of the band [low, high]
    high: float
    examples: list[Example]


@dataclass
class FeatureDashboard:
    transcoders: str  # the transcoder set's name
    layer: int
    index: int
    n_tokens: int  # tokens the statistics were gathered over (BOS excluded)
    count: int  # of them, those where the feature is active
    mean: float  # mean non-zero activation
    max: float
    histogram_edges: list[float]  # len(histogram_counts) + 1 edges (non-empty span only)
    histogram_counts: list[int]
    quantiles: dict[float, float]  # level -> activation, within one histogram bin
    bands: list[Band]  # top activations first, then quantile bands from high to low
    top_logits: list[tuple[str, float]]  # promoted through the unembedding (summed over output layers)
    bottom_logits: list[tuple[str, float]]
    logits_per_layer: dict[int, tuple[list[tuple[str, float]], list[tuple[str, float]]]] = field(default_factory=dict)
    top_inputs: list[tuple[str, float]] = field(default_factory=list)  # excite it most through the embedding
    bottom_inputs: list[tuple[str, float]] = field(default_factory=list)
    label: str = ""
    label_source: str = "automatic"  # or "user": a person's label, which overrides the automatic one
    automatic_label: str = ""

    @property
    def frequency(self) -> float:
        return self.count / self.n_tokens if self.n_tokens else 0.0

    @property
    def top_examples(self) -> list[Example]:
        return self.bands[0].examples if self.bands else []

    def to_json(self, scan: str | None = None) -> dict:
        from .export import feature_json

        return feature_json(self, scan)

    def text(self, n_examples: int = 8) -> str:
        from .show import dashboard_text

        return dashboard_text(self, n_examples)

    def show(self, n_examples: int = 8) -> None:
        print(self.text(n_examples))

    def figure(self, path, n_examples: int = 8):
        from .show import dashboard_figure

        return dashboard_figure(self, path, n_examples)
