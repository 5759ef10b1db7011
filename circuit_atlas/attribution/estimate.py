"""How much memory and time an attribution graph will take, before computing it.

Edges are sparse (CSR, 8 bytes per stored edge: int32 source + float32 value). A row is dense
only over its causal cone, so the edge count follows from where the active features sit:

    N[l, p]           active features at layer l, position p (one clean forward counts them)
    feature row (l, p):  Σ_{l' < l, 1 <= p' <= p} N[l', p']   features below it, up to its position
                         + l · p                             errors (l' < l, 1 <= p' <= p)
                         + p + 1                             embeddings (BOS included)
    logit row:           every source S = A + L·(T-1) + T, except the last layer's features and
                         errors at positions < T-1 (no attention layer above them reaches the last token)

All features (max_feature_nodes None), no edge_budget: this is the graph's n_edges exactly (unless an
effect is exactly 0.0 in floating point). Under max_feature_nodes = k the rows are chosen by influence
during attribution, so the estimate takes the k largest cones: an upper bound (edges_exact False).
Under edge_budget f a row keeps only entries with |a| >= f · Σ|row|, so at most ⌊1/f⌋ of them (their
mass cannot exceed the row's): a row stores at most min(cone, ⌊1/f⌋) edges, a bound that needs no
assumption. `kept_fraction` q (an input, stated with the estimate) assumes instead that a row keeps
q of its cone: min(q · cone, ⌊1/f⌋).

Peak memory (beyond the loaded model), in two places when the model sits on an accelerator:
    device (the model's)
      context    the clean run (inputs and outputs of every transcoder, errors, frozen attention patterns,
                 two (T, V) logit tables), and per active feature its (layer, position, index), activation
                 and decoder-index entries: O(A), no per-feature vector (context.py)
      one batch  cotangents (B, T, d), its dense cone rows (B, C), the column map (S,), the decoder rows
                 gathered for one read (GATHER_ROWS x d) and the edge store's masks, a group of rows at a time
    host (the CPU's; the same RAM when the model is on the CPU)
      edges      STORE_BYTES per stored edge, plus the larger of: pruning/scoring temporaries
                 (POST_BYTES_PER_EDGE) and, under max_feature_nodes, the in-memory working copy that ranks
                 features (RANK_BYTES_PER_EDGE). With edge_dir the store's own bytes live on disk.
Time is the transposed passes (per row: layers below it x positions up to it) at a throughput measured
by a short matmul probe, plus a cost per stored edge (sparsifying, assembling, saving, pruning, scoring).
ROW_EFFICIENCY, SECONDS_PER_EDGE and POST_BYTES_PER_EDGE are measured by bench/estimate.py.

The estimate needs only shapes: `estimate_attribution` counts N from one forward; `estimate_from_config`
takes an HF config.json and a transcoder width and L0 (no weights), N uniform at L0 per layer and position.

budget.py compares the estimate with the memory budget and refuses with the fix (`check_attribution_budget`,
called at the start of `attribute()`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .config import AttributionConfig

GB = 1e9
STORE_BYTES = 8  # per stored edge: int32 source + float32 value (graph/edge_store.py, graph/sparse.py)
POST_BYTES_PER_EDGE = 22.0  # saving's, pruning's and scoring's temporaries per edge (bench/estimate.py)
RANK_BYTES_PER_EDGE = 12.0  # under max_feature_nodes: the in-memory CSR copy + |normalised| values that rank
ROW_EFFICIENCY = 0.3  # fraction of the probe's matmul throughput the row batches reach (bench/estimate.py)
SECONDS_PER_EDGE = 1e-7  # sparsify (per computed entry) + assemble, save, prune, score (per stored edge), twice each
COTANGENT_COPIES = 6  # (B, T, d) cotangent-sized tensors alive at once in a backward batch
FEATURE_BYTES = 24  # per active feature: its (layer, position, index) int64 (plus its activation, 8 per decoder row)


@dataclass(frozen=True)
class Shape:
    """What an estimate needs: the model's shapes and where the prompt's active features sit."""

    n_layers: int  # L
    d_model: int  # d
    n_heads: int  # H
    element: int  # bytes per element of the compute dtype
    n_out: float  # decoder rows per feature, on average (PLT 1, CLT (L+1)/2)
    counts: tuple[tuple[int, ...], ...]  # N (L, T): active features per layer and position (0 at BOS)
    n_logits: int  # K logit targets
    weight_bytes: float  # model + transcoder weights (already in memory when attributing)
    width: int = 0  # F: features per layer (the widest layer)
    vocab: int = 0  # V: the vocabulary (the clean run keeps (T, V) logits)

    @property
    def tokens(self) -> int:
        return len(self.counts[0])


@dataclass
class Estimate:
    tokens: int  # T, BOS included
    active_features: int  # A
    sources: int  # S = A + L*(T-1) + T
    rows: int  # R (feature rows + logit targets)
    n_edges: int  # stored edges (CSR nnz): exact when edges_exact, else an upper bound
    edges_exact: bool
    edges_bytes: float  # the CSR's bytes (STORE_BYTES per edge + indptr)
    dense_bytes: float  # what the old dense (rows x sources float32) matrix would have taken
    peak_bytes: float  # beyond what the loaded model already uses
    seconds: float
    model_bytes: float  # model + transcoder weights
    disk_bytes: float = 0.0  # with edge_dir: the edges on disk
    device_bytes: float = 0.0  # of peak_bytes: what lives on the model's device (context, one batch)
    host_bytes: float = 0.0  # of peak_bytes: what lives in CPU RAM (the edges and what works on them)
    context_bytes: float = 0.0  # of device_bytes: the clean run and the attribution context
    kept_fraction: float | None = None  # the assumed share of each cone a budgeted row keeps (None: the bound)

    def describe(self) -> str:
        bound = "" if self.edges_exact else "at most "
        if self.kept_fraction is not None:
            bound = f"assuming rows keep {self.kept_fraction:g} of their cone, "
        disk = f" (edges on disk: {_gb(self.disk_bytes)})" if self.disk_bytes else ""
        split = f"; on an accelerator {_gb(self.device_bytes)} of it on the device, {_gb(self.host_bytes)} in RAM"
        return (
            f"{self.tokens} tokens, {self.active_features:,} active features, {self.rows:,} rows x "
            f"{self.sources:,} sources, {bound}{self.n_edges:,} edges ({_gb(self.edges_bytes)} sparse; dense "
            f"would be {_gb(self.dense_bytes)}): peak about {_gb(self.peak_bytes)} beyond the loaded model "
            f"({_gb(self.model_bytes)}){disk}{split}, about {_seconds(self.seconds)}"
        )


def _gb(n: float) -> str:
    return f"{n / GB:.3g} GB"


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.0f} h" if s < 172800 else f"{s / 86400:,.0f} days"


_throughput: list[float] = []


def matmul_throughput(device=None) -> float:
    """Float32 matmul FLOP/s of this device, from a ~50 ms probe (measured once per process)."""
    import torch

    if _throughput:
        return _throughput[0]
    a = torch.randn(256, 512, device=device)
    b = torch.randn(512, 512, device=device)
    (a @ b).sum().item()  # warm-up
    best = 0.0
    for _ in range(5):  # the best of five 10 ms windows: the machine's speed, not a moment's load
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.01:
            (a @ b).sum().item()
            n += 1
        best = max(best, n * 2 * 256 * 512 * 512 / (time.perf_counter() - start))
    flops = best
    _throughput.append(flops)
    return flops


def _counts_tensor(shape: Shape):
    import torch

    return torch.tensor(shape.counts, dtype=torch.long)  # (L, T)


def cone_sizes(shape: Shape):
    """(L, T) int64: the stored edges of a feature row at (layer, position) (see the module docstring)."""
    import torch

    from .context import ZERO_POSITIONS

    N = _counts_tensor(shape)  # (L, T)
    L, T = N.shape
    below = torch.zeros(L, T, dtype=torch.long)
    below[1:] = N.cumsum(0)[:-1].cumsum(1)  # features at layers < l, positions <= p
    layer = torch.arange(L)[:, None]
    position = torch.arange(T)[None, :]
    errors = layer * (position - ZERO_POSITIONS + 1).clamp_min(0)
    return below + errors + position + 1


def _selected_rows(shape: Shape, k: int | None):
    """(cells, how many rows) of the feature rows counted: all, or the k with the largest cones."""
    import torch

    N = _counts_tensor(shape).flatten()
    cone = cone_sizes(shape).flatten()
    if k is None or k >= int(N.sum()):
        return cone, N
    order = torch.argsort(cone, descending=True, stable=True)
    taken = N[order].cumsum(0).clamp_max(k)
    rows = torch.zeros_like(N)
    rows[order] = torch.diff(taken, prepend=taken.new_zeros(1))
    return cone, rows


def estimate_shape(shape: Shape, config: AttributionConfig, throughput: float, *,
                   kept_fraction: float | None = None) -> Estimate:  # fmt: skip
    """The estimate for a prompt of this Shape under these settings (throughput: matmul FLOP/s).

    kept_fraction: under an edge_budget, assume each row keeps this share of its cone (in (0, 1];
    None: the guaranteed bound min(cone, 1/edge_budget) per row).
    """
    from ..graph.edge_store import ADD_ENTRIES
    from .backward import GATHER_ROWS

    if kept_fraction is not None:
        if config.edge_budget is None:
            raise ValueError("kept_fraction describes rows thinned by an edge_budget: give edge_budget too")
        if not 0 < kept_fraction <= 1:
            raise ValueError(f"kept_fraction must be in (0, 1], got {kept_fraction!r}")
    L, d, T, K, e = shape.n_layers, shape.d_model, shape.tokens, shape.n_logits, shape.element
    N = _counts_tensor(shape)
    A = int(N.sum())
    S = A + L * (T - 1) + T
    k = config.max_feature_nodes
    ranked = k is not None and k < A
    cone, rows = _selected_rows(shape, k)
    n_feature_rows = int(rows.sum())
    logit_row = S - int(N[L - 1, : T - 1].sum()) - max(T - 2, 0)  # last layer below the last token: no path
    n_computed = int((cone * rows).sum()) + K * logit_row  # entries computed (dense over each cone)
    kept, kept_logit = cone, logit_row
    if config.edge_budget is not None:  # a row keeps at most 1/f entries (see the module docstring)
        most = int(1 / config.edge_budget)
        share = 1.0 if kept_fraction is None else kept_fraction
        kept = (cone.double() * share).ceil().long().clamp_max(most)
        kept_logit = min(int(-(-logit_row * share // 1)), most)
    n_edges = int((kept * rows).sum()) + K * kept_logit
    R = n_feature_rows + K
    edges_bytes = float(STORE_BYTES * n_edges + 8 * (R + 1))

    # Context (device): the clean run - transcoder inputs and outputs, errors and the reconstruction
    # beside them (L, T, d) each, patterns (L, H, T, T), logits before and after the soft cap (T, V) -
    # one layer's pre-activations and activations (T, F) while features are found, and O(A) per feature.
    clean = L * T * d * e * 4 + L * shape.n_heads * T * T * e + 2 * T * shape.vocab * 4 + 2 * T * shape.width * e
    context = clean + A * (FEATURE_BYTES + e + 8 * shape.n_out)
    row_cache = A * shape.n_out * d * e  # every decoder row, kept when it fits ROW_CACHE_BYTES (context.py)
    from .context import ROW_CACHE_BYTES

    if row_cache <= ROW_CACHE_BYTES:
        context += row_cache
    # One batch (device): cotangents (B, T, d), the dense cone rows (B, C), the column map (S,) int64, one
    # gather of decoder rows, and the store's masks for a group of at most ADD_ENTRIES entries.
    widest = int(cone[rows > 0].max()) if n_feature_rows else 0
    B = min(config.batch_size, max(n_feature_rows, 1))
    block = max(B * widest, min(config.batch_size, K) * logit_row)
    add_bytes = 2 * e + 2 + (0 if e == 4 else 4)  # |block|, keep and drop masks, |block| x mask, float32 copy
    per_batch = block * e + 8 * S + GATHER_ROWS * d * e + min(block, ADD_ENTRIES) * add_bytes
    per_batch += min(config.batch_size, max(R, 1)) * T * d * e * COTANGENT_COPIES
    device = context + per_batch
    # Host: the store, then saving / pruning / scoring temporaries or the ranking copy, and the ranking's
    # node vectors (weights, influence, layers, visited) under max_feature_nodes.
    store = 0.0 if config.edge_dir else edges_bytes
    temporaries = n_edges * max(POST_BYTES_PER_EDGE, RANK_BYTES_PER_EDGE if ranked else 0.0)
    host = store + temporaries + (32.0 * S if ranked else 0.0)
    peak = device + host

    # Work per row at (l, p): the transposed pass over l layers and p+1 positions (attention OV, norms and
    # skip: about 8 d^2 per layer and position, plus 2 d per attended position), and reading its cone (2 d).
    layer = _arange(L)[:, None].expand(L, T).flatten()
    position = _arange(T)[None, :].expand(L, T).flatten() + 1
    per_row = layer * position * (8 * d * d + 2 * d * position) + 2 * cone * d
    flops = float((rows * per_row).sum()) + K * (L * T * (8 * d * d + 2 * d * T) + 2 * logit_row * d)
    # every computed entry is thinned once; every stored edge is assembled, saved, pruned and scored
    seconds = flops / (ROW_EFFICIENCY * throughput) + SECONDS_PER_EDGE * (n_edges + n_computed) / 2
    return Estimate(
        tokens=T,
        active_features=A,
        sources=S,
        rows=R,
        n_edges=n_edges,
        edges_exact=not ranked and config.edge_budget is None,
        edges_bytes=edges_bytes,
        dense_bytes=4.0 * R * S,
        peak_bytes=peak,
        seconds=seconds,
        model_bytes=shape.weight_bytes,
        disk_bytes=edges_bytes if config.edge_dir else 0.0,
        device_bytes=device,
        host_bytes=host,
        context_bytes=context,
        kept_fraction=kept_fraction,
    )


def _arange(n: int):
    import torch

    return torch.arange(n, dtype=torch.float64)


def shape_of_prompt(model, input_ids, config: AttributionConfig) -> Shape:
    """The Shape of `input_ids` on `model`: one clean forward counts the active features and logit targets."""
    import torch

    from .context import ZERO_POSITIONS
    from .targets import resolve_targets

    T = int(input_ids.shape[0])
    with torch.no_grad():
        run = model.run(input_ids)
        tc = model.transcoders
        counts = []
        for l in range(model.n_layers):
            active = tc.activate(l, tc.encode(l, run.feature_inputs[l])) != 0  # (T, F)
            active[:ZERO_POSITIONS] = False
            counts.append(tuple(active.sum(dim=1).tolist()))
        K = len(resolve_targets(model, run.logits_pre_softcap[T - 1], run.logits[T - 1], None,
                                config.max_n_logits, config.desired_logit_prob))  # fmt: skip
    L = model.n_layers
    n_out = sum(tc.W_dec[l].shape[1] for l in range(L)) / L
    width = max(tc.W_enc[l].shape[0] for l in range(L))
    return Shape(L, model.d_model, model.weights.blocks[0].attn.n_heads, _element_size(model), n_out,
                 tuple(counts), K, _weight_bytes(model), width, model.vocab_size)  # fmt: skip


def count_active_features(model, input_ids) -> int:
    """Active (feature, position >= 1) pairs of the prompt: the feature nodes of its graph."""
    return sum(map(sum, shape_of_prompt(model, input_ids, AttributionConfig()).counts))


def _weight_bytes(model) -> float:
    tc = model.transcoders
    tensors = [*tc.W_enc, *tc.W_dec, *tc.b_enc, *tc.b_dec, *(tc.W_skip or [])]
    size = sum(t.numel() * t.element_size() for t in tensors)
    size += sum(p.numel() * p.element_size() for p in model.hf_model.parameters())
    return float(size)


def _element_size(model) -> int:
    import torch

    return torch.empty(0, dtype=model.dtype).element_size()


def estimate_for(model, shape: Shape, config: AttributionConfig) -> Estimate:
    return estimate_shape(shape, config, matmul_throughput(model.device))


def estimate_attribution(model, prompt, config: AttributionConfig | None = None) -> Estimate:
    """Estimate for attributing `prompt` (text or ids): one clean forward counts its active features."""
    config = config or AttributionConfig()
    ids = model.tokenize(prompt) if not _is_ids(prompt) else prompt
    return estimate_shape(shape_of_prompt(model, ids, config), config, matmul_throughput(model.device))


DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


def shape_from_config(hf_config: dict, width: int, l0: float, n_tokens: int, *, kind: str = "plt",
                      skip: bool = False, dtype: str | None = None, n_logits: int = 10) -> Shape:  # fmt: skip
    """The Shape of an n_tokens prompt from an HF config.json (dict) and transcoder width and L0, no weights.

    Assumes L0 active features at every layer and position >= 1 (round(l0) each), and n_logits targets.
    kind "plt" (one decoder per feature) or "clt" (a feature at layer l decodes into layers l..L-1).
    """
    cfg = hf_config.get("text_config", hf_config)  # multimodal configs nest the language model's
    missing = [k for k in ("num_hidden_layers", "hidden_size", "num_attention_heads") if k not in cfg]
    if missing:
        raise ValueError(f"the model config lacks {', '.join(missing)}: give the model's HF config.json")
    if kind not in ("plt", "clt"):
        raise ValueError(f"kind must be 'plt' or 'clt', got {kind!r}")
    if not width >= 1 or not 0 < l0 <= width or n_tokens < 2:
        raise ValueError(f"need width >= 1, 0 < l0 <= width and n_tokens >= 2; got {width}, {l0}, {n_tokens}")
    L, d, H = int(cfg["num_hidden_layers"]), int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or H)
    hd = int(cfg.get("head_dim") or d // H)
    ff = int(cfg.get("intermediate_size") or 4 * d)
    V = int(cfg.get("vocab_size") or 0)
    dtype = dtype or str(cfg.get("dtype") or cfg.get("torch_dtype") or hf_config.get("torch_dtype") or "float32")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    e = DTYPE_BYTES[dtype]
    n_out = 1.0 if kind == "plt" else (L + 1) / 2
    per_layer = d * hd * (2 * H + 2 * kv) + 3 * d * ff + width * d * (1 + n_out) + (d * d if skip else 0)
    tied = cfg.get("tie_word_embeddings", hf_config.get("tie_word_embeddings", True))
    weight_bytes = float(e * (L * per_layer + V * d * (1 if tied else 2)))
    a = int(round(l0))
    counts = tuple((0,) + (a,) * (n_tokens - 1) for _ in range(L))
    return Shape(L, d, H, e, n_out, counts, n_logits, weight_bytes, width, V)


def estimate_from_config(hf_config: dict, width: int, l0: float, n_tokens: int,
                         config: AttributionConfig | None = None, **kwargs) -> Estimate:  # fmt: skip
    """Estimate from shapes only (see `shape_from_config`), at this machine's CPU matmul throughput."""
    config = config or AttributionConfig()
    shape = shape_from_config(hf_config, width, l0, n_tokens, n_logits=config.max_n_logits, **kwargs)
    return estimate_shape(shape, config, matmul_throughput())


def _is_ids(prompt) -> bool:
    import torch

    return isinstance(prompt, torch.Tensor) and prompt.dtype == torch.long
