"""Import circuit-tracer's `.pt` graph files without running any code they may carry.

circuit-tracer's `Graph.to_pt` is a `torch.save` of a dict:

    input_string, input_tokens (T,), active_features (A, 3) [layer, pos, feature],
    activation_values (A,), selected_features (n_sel,), adjacency_matrix (N, N) with
    N = n_sel + L·T + T + K laid out as features (selected) | errors (layer-major) | tokens | logits,
    logit_targets (list of LogitTarget(token_str, vocab_idx); older files: a tensor of ids, or
    the key `logit_tokens`), logit_probabilities (K,), vocab_size, cfg (an object), scan.

A pickle can call any importable function, so `torch.load(weights_only=False)` on an untrusted
file runs its code. We load with a restricted unpickler instead: only torch's tensor-rebuild
functions, dtypes, collections.OrderedDict and circuit-tracer/TransformerLens's known classes
(replaced by inert stand-ins, then read as plain dicts/tuples) may be named; anything else is
refused before it is called.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
import types
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .graph import EMBEDDING, ERROR, FEATURE, LOGIT, Graph


class LogitTarget(NamedTuple):
    """Stand-in for circuit-tracer's LogitTarget."""

    token_str: str
    vocab_idx: int


class _Record:
    """Stand-in for a config object (UnifiedConfig, HookedTransformerConfig): it only stores its state."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


_KNOWN_CLASSES = {"LogitTarget": LogitTarget, "UnifiedConfig": _Record, "HookedTransformerConfig": _Record}
_KNOWN_PACKAGES = ("circuit_tracer", "transformer_lens")
_ALLOWED = {
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch._tensor", "_rebuild_from_type"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Tensor"), ("torch", "Size"), ("torch", "device"), ("torch.nn.parameter", "Parameter"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("_codecs", "encode"),
}  # fmt: skip


class RefusedPickle(ValueError):
    """The file names a global we will not load (it would run code)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles spell Python 3 names the Python 2 way (__builtin__.set): map them first
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.split(".")[0] in _KNOWN_PACKAGES and name in _KNOWN_CLASSES:
            return _KNOWN_CLASSES[name]
        raise RefusedPickle(f"{module}.{name}")


def _load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# what torch.load needs from a pickle module: Unpickler and load
_restricted_pickle = types.SimpleNamespace(
    __name__="circuit_atlas_restricted_pickle", Unpickler=_RestrictedUnpickler, load=_load
)


def _plain(value: Any) -> Any:
    """Stand-ins, dtypes and devices as JSON-friendly values (for graph.metadata)."""
    if isinstance(value, _Record):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(str(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)


def _read(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except RefusedPickle as exc:
        raise ValueError(f"refusing to load {path}: it contains code ({exc}), not just graph data") from None
    except RuntimeError as exc:
        if "pickle_module" in str(exc):  # TORCH_FORCE_WEIGHTS_ONLY_LOAD forbids a custom unpickler
            raise ValueError(f"cannot load {path} while TORCH_FORCE_WEIGHTS_ONLY_LOAD is set: {exc}") from None
        raise ValueError(f"{path} is not a readable circuit-tracer graph file ({exc})") from None
    except Exception as exc:  # truncated zip, garbage bytes, ...
        raise ValueError(f"{path} is not a readable circuit-tracer graph file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a circuit-tracer graph file (it holds a {type(data).__name__}, not a dict)")
    return data


def load_circuit_tracer_pt(path: str | os.PathLike, tokenizer: Any = None) -> Graph:
    """Read a circuit-tracer `Graph.to_pt` file into a Graph, without executing code.

    Error nodes are dropped at positions where every error node has no effect (the zeroed BOS
    position); every token keeps its embedding node (BOS included). Token strings come from
    `tokenizer.decode` if a tokenizer is given, else they are shown as "[id]".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no circuit-tracer graph file at {path}")
    d = _read(path)
    required = ("input_tokens", "active_features", "selected_features", "adjacency_matrix", "logit_probabilities")
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"{path} is not a circuit-tracer graph file (missing {', '.join(missing)})")
    cfg = _plain(d.get("cfg")) or {}
    tokens_t = torch.as_tensor(d["input_tokens"]).long().flatten()  # (T,)
    active = torch.as_tensor(d["active_features"]).long().reshape(-1, 3)  # (A, 3)
    acts = torch.as_tensor(d.get("activation_values", torch.zeros(len(active)))).float()  # (A,)
    selected = torch.as_tensor(d["selected_features"]).long().flatten()  # (n_sel,)
    adj = torch.as_tensor(d["adjacency_matrix"]).float()  # (N, N)
    probs = torch.as_tensor(d["logit_probabilities"]).float().flatten()  # (K,)
    T, n_sel, K, N = len(tokens_t), len(selected), len(probs), adj.shape[0]
    L = cfg.get("n_layers") if isinstance(cfg, dict) else None
    if not isinstance(L, int):
        L = (N - n_sel - T - K) // max(T, 1)
    if adj.shape != (N, N) or N != n_sel + L * T + T + K:
        raise ValueError(
            f"{path}: adjacency {tuple(adj.shape)} does not match "
            f"{n_sel} features + {L}x{T} errors + {T} tokens + {K} logits"
        )

    targets = d.get("logit_targets", d.get("logit_tokens"))
    if isinstance(targets, torch.Tensor) or targets is None:
        ids = torch.as_tensor(targets if targets is not None else [-1] * K).long().flatten().tolist()
        targets = [LogitTarget(tokenizer.decode([i]) if tokenizer and i >= 0 else f"[{i}]", i) for i in ids]
    targets = [LogitTarget(str(t[0]), int(t[1])) for t in targets]
    if len(targets) != K:
        raise ValueError(f"{path}: {len(targets)} logit targets for {K} logit probabilities")

    # our order: features by (layer, pos, feature); errors layer-major minus all-zero positions; tokens; logits
    feats = active[selected]  # (n_sel, 3)
    order = sorted(range(n_sel), key=lambda i: (*feats[i].tolist(), i))
    err_cols = adj[:, n_sel : n_sel + L * T].reshape(N, L, T)  # (N, L, T)
    live = err_cols.ne(0).any(dim=0).any(dim=0)  # (T,) positions where some error node has an effect
    errors = [(l, p) for l in range(L) for p in range(T) if live[p]]
    old = torch.tensor(order + [n_sel + l * T + p for l, p in errors] + [n_sel + L * T + p for p in range(T)]
                       + [n_sel + L * T + T + k for k in range(K)], dtype=torch.long)  # fmt: skip
    n_src = len(old) - K
    rows = torch.cat([torch.arange(n_sel), torch.arange(n_src, len(old))])  # features, then logits

    ids = tokens_t.tolist()
    fl, fp, ff = ([int(feats[i, c]) for i in order] for c in range(3))  # selected features' layer, pos, index
    vocab_size = d.get("vocab_size", cfg.get("d_vocab") if isinstance(cfg, dict) else None)
    graph = Graph(
        prompt=str(d.get("input_string", "")),
        input_ids=tokens_t,
        tokens=[tokenizer.decode([i]) if tokenizer else f"[{i}]" for i in ids],
        n_layers=L,
        kind=torch.tensor([FEATURE] * n_sel + [ERROR] * len(errors) + [EMBEDDING] * T + [LOGIT] * K, dtype=torch.int8),
        layer=torch.tensor(fl + [l for l, _ in errors] + [-1] * T + [L] * K),
        position=torch.tensor(fp + [p for _, p in errors] + list(range(T)) + [T - 1] * K),
        feature=torch.tensor(ff + [-1] * len(errors) + ids + [t.vocab_idx for t in targets]),
        activation=torch.cat([acts[selected][order] if n_sel else torch.zeros(0), torch.zeros(len(errors) + T), probs]),
        edges=adj[old[rows]][:, old[:n_src]],  # circuit-tracer's file is dense already; stored sparse
        row_nodes=rows,
        logit_labels=[t.token_str for t in targets],
    )  # fmt: skip
    scan = d.get("scan")
    graph.metadata = {
        "source_format": "circuit-tracer-pt",
        "scan": scan if isinstance(scan, str) else None,
        "transcoder_list": list(scan) if isinstance(scan, (list, tuple)) else [],
        "model": cfg.get("model_name") if isinstance(cfg, dict) else None,
        "tokenizer_name": cfg.get("tokenizer_name") if isinstance(cfg, dict) else None,
        "vocab_size": vocab_size,
        "cfg": cfg,
        "targets": [
            {
                "label": t.token_str,
                "token_id": t.vocab_idx,
                "probability": float(p),
                "custom": isinstance(vocab_size, int) and t.vocab_idx >= vocab_size,
            }
            for t, p in zip(targets, probs.tolist())
        ],  # fmt: skip
    }
    return graph
