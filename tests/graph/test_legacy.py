import builtins
import contextlib
import dataclasses
import os
import sys
import types
from typing import NamedTuple

import pytest
import torch

from circuit_atlas.graph.legacy import load_circuit_tracer_pt


@contextlib.contextmanager
def circuit_tracer_classes():
    """Register stand-ins under circuit-tracer's module names just long enough to torch.save with them."""

    class LogitTarget(NamedTuple):
        token_str: str
        vocab_idx: int

    @dataclasses.dataclass
    class UnifiedConfig:
        n_layers: int
        d_model: int
        tokenizer_name: str
        model_name: str
        dtype: torch.dtype = torch.float32

    names = {
        "circuit_tracer.attribution.targets": LogitTarget,
        "circuit_tracer.utils.tl_nnsight_mapping": UnifiedConfig,
    }
    added = []
    for module, cls in names.items():
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        cls.__module__, cls.__qualname__ = module, cls.__name__
        setattr(sys.modules[module], cls.__name__, cls)
    try:
        yield LogitTarget, UnifiedConfig
    finally:
        for name in added:
            del sys.modules[name]


# circuit-tracer layout: 3 selected features (stored unsorted), L = 2, T = 3, K = 2, N = 3 + 6 + 3 + 2 = 14
#   old index: 0 f(1,2,7)  1 f(0,1,3)  2 f(0,2,5) | errors 3 + l*3 + p | tokens 9, 10, 11 | logits 12, 13
# No error node at position 0 has an effect, so errors (0,0) and (1,0) are dropped. Our order:
#   0 f(0,1,3)  1 f(0,2,5)  2 f(1,2,7)  3 e(0,1)  4 e(0,2)  5 e(1,1)  6 e(1,2)  7-9 emb 0..2  10 L0  11 L1
OLD_EDGES = {(0, 2): 1.5, (0, 5): 0.5, (1, 10): 2.0, (1, 4): 0.1, (2, 11): -1.0, (2, 9): 0.25,
             (12, 0): 3.0, (12, 8): -0.5, (13, 1): 1.0, (13, 11): 0.75}  # fmt: skip
NEW_EDGES = {(2, 1): 1.5, (2, 4): 0.5, (0, 8): 2.0, (0, 3): 0.1, (1, 9): -1.0, (1, 7): 0.25,
             (10, 2): 3.0, (10, 6): -0.5, (11, 0): 1.0, (11, 9): 0.75}  # fmt: skip


def _ct_dict(LogitTarget, UnifiedConfig):
    adj = torch.zeros(14, 14)
    for (t, s), w in OLD_EDGES.items():
        adj[t, s] = w
    return {
        "input_string": "<bos> a b",
        "input_tokens": torch.tensor([2, 651, 6037]),
        "active_features": torch.tensor([[1, 2, 7], [0, 1, 3], [0, 2, 5], [1, 1, 9]]),
        "activation_values": torch.tensor([0.7, 1.1, 2.2, 9.9]),
        "selected_features": torch.tensor([0, 1, 2]),
        "adjacency_matrix": adj,
        "logit_targets": [LogitTarget(" Austin", 22605), LogitTarget(" the", 573)],
        "logit_probabilities": torch.tensor([0.5, 0.25]),
        "vocab_size": 256000,
        "cfg": UnifiedConfig(n_layers=2, d_model=8, tokenizer_name="google/gemma-2-2b", model_name="gemma-2-2b"),
        "scan": "gemma-2-2b",
    }


def test_load_circuit_tracer_pt(tmp_path):
    path = tmp_path / "graph.pt"
    with circuit_tracer_classes() as classes:
        torch.save(_ct_dict(*classes), path)
    assert "circuit_tracer" not in sys.modules  # nothing to import when loading
    g = load_circuit_tracer_pt(path)
    assert g.ids == ["feat:0:1:3", "feat:0:2:5", "feat:1:2:7", "err:0:1", "err:0:2", "err:1:1", "err:1:2",
                     "emb:0", "emb:1", "emb:2", "logit:0", "logit:1"]  # fmt: skip
    assert g.feature.tolist()[7:] == [2, 651, 6037, 22605, 573]
    assert g.activation.tolist() == pytest.approx([1.1, 2.2, 0.7] + [0.0] * 7 + [0.5, 0.25])
    assert g.row_nodes.tolist() == [0, 1, 2, 10, 11]
    expected = torch.zeros(12, 12)
    for (t, s), w in NEW_EDGES.items():
        expected[t, s] = w
    assert torch.equal(g.adjacency, expected)
    assert g.logit_labels == [" Austin", " the"] and g.n_layers == 2 and g.prompt == "<bos> a b"
    assert g.metadata["cfg"]["model_name"] == "gemma-2-2b" and g.metadata["cfg"]["dtype"] == "torch.float32"
    assert g.metadata["scan"] == "gemma-2-2b" and g.metadata["targets"][0]["token_id"] == 22605


@pytest.mark.parametrize("key", ["logit_targets", "logit_tokens"])
def test_older_files_with_token_id_tensors(tmp_path, key):
    with circuit_tracer_classes() as classes:
        d = _ct_dict(*classes)
        del d["logit_targets"]
        d[key] = torch.tensor([22605, 573])
        torch.save(d, tmp_path / "old.pt")
    g = load_circuit_tracer_pt(tmp_path / "old.pt")
    assert g.logit_token_ids.tolist() == [22605, 573] and g.logit_labels == ["[22605]", "[573]"]


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("func", [os.system, builtins.eval, builtins.exec])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, func):
    marker = tmp_path / "pwned"
    code = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"
    torch.save({"input_tokens": torch.tensor([1]), "payload": _Evil(func, code)}, tmp_path / "evil.pt")
    with pytest.raises(
        ValueError, match=r"refusing to load .*evil\.pt.*contains code \((posix|os|nt|builtins)\.(system|eval|exec)\)"
    ):
        load_circuit_tracer_pt(tmp_path / "evil.pt")
    assert not marker.exists()


def test_unknown_class_even_in_circuit_tracer_is_refused(tmp_path):
    class Gadget:
        pass

    module = types.ModuleType("circuit_tracer")
    Gadget.__module__, Gadget.__qualname__ = "circuit_tracer", "Gadget"
    module.Gadget = Gadget
    sys.modules["circuit_tracer"] = module
    try:
        torch.save({"x": Gadget()}, tmp_path / "g.pt")
    finally:
        del sys.modules["circuit_tracer"]
    with pytest.raises(ValueError, match=r"circuit_tracer\.Gadget"):
        load_circuit_tracer_pt(tmp_path / "g.pt")


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_circuit_tracer_pt(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"definitely not a torch file")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        load_circuit_tracer_pt(tmp_path / "junk.pt")
    torch.save({"adjacency_matrix": torch.zeros(2, 2)}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing"):
        load_circuit_tracer_pt(tmp_path / "partial.pt")
