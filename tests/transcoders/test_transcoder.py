"""The maths of Transcoders, checked against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from circuit_atlas.transcoders import Transcoders
from circuit_atlas.transcoders.activations import apply_activation

T = torch.tensor


def hand_plt(activation: str = "jumprelu", skip: bool = False) -> Transcoders:
    """L=2, d=2, F=3 (layer 0) and F=2 (layer 1): small enough to compute on paper."""
    return Transcoders(
        kind="plt",
        W_enc=[T([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), T([[1.0, -1.0], [2.0, 0.0]])],
        b_enc=[T([0.0, -1.0, 0.5]), T([0.0, 0.0])],
        W_dec=[T([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, -1.0]]]), T([[[1.0, 1.0]], [[0.0, 2.0]]])],
        b_dec=[T([0.5, -0.5]), T([1.0, 1.0])],
        activation=activation,
        threshold=[T([2.0, 1.0, 6.0]), T([0.5, 1.0])],
        W_skip=[T([[0.0, 1.0], [0.0, 0.0]]), T([[0.0, 0.0], [2.0, 0.0]])] if skip else None,
    )


def test_plt_encode_is_x_W_enc_T_plus_b():
    tc = hand_plt()
    assert torch.equal(tc.encode(0, T([2.0, 3.0])), T([2.0, 2.0, 5.5]))
    assert torch.equal(tc.encode(1, T([[1.0, 1.0], [0.0, 1.0]])), T([[0.0, 2.0], [-1.0, 0.0]]))


def test_plt_relu_and_jumprelu_activations():
    pre = T([2.0, 2.0, 5.5])
    assert torch.equal(hand_plt("relu").activate(0, pre), T([2.0, 2.0, 5.5]))
    # thresholds [2, 1, 6]: 2 > 2 is false (strict), 2 > 1, 5.5 > 6 is false
    assert torch.equal(hand_plt("jumprelu").activate(0, pre), T([0.0, 2.0, 0.0]))


def test_jumprelu_is_strict_at_the_threshold():
    theta = T([1.0, 1.0, 1.0])
    out = apply_activation("jumprelu", T([1.0, torch.nextafter(T(1.0), T(2.0)).item(), 0.5]), theta)
    assert out[0] == 0 and out[1] > 1 and out[2] == 0


def test_jumprelu_keeps_negative_thresholds_semantics():
    # a = h * 1[h > theta] exactly, also when theta < 0 (no extra ReLU)
    out = apply_activation("jumprelu", T([-0.5, -2.0]), T([-1.0, -1.0]))
    assert torch.equal(out, T([-0.5, 0.0]))


def test_topk_keeps_exactly_k_largest_positive():
    pre = T([[3.0, -1.0, 2.0, 5.0], [-1.0, -2.0, -3.0, -4.0], [1.0, 4.0, 4.5, 0.5]])
    out = apply_activation("topk", pre, k=2)
    assert torch.equal(out, T([[3.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0], [0.0, 4.0, 4.5, 0.0]]))
    big = torch.randn(50, 64, generator=torch.Generator().manual_seed(0)).abs() + 0.1
    assert ((apply_activation("topk", big, k=7) != 0).sum(-1) == 7).all()


def test_topk_with_k_larger_than_width():
    assert torch.equal(apply_activation("topk", T([1.0, -1.0]), k=5), T([1.0, 0.0]))


def test_plt_reconstruct_by_hand():
    tc = hand_plt("jumprelu", skip=True)
    x = T([[[2.0, 3.0]], [[1.0, 1.0]]])  # (L=2, T=1, d=2)
    acts = [tc.activate(l, tc.encode(l, x[l])) for l in range(2)]
    assert torch.equal(acts[0], T([[0.0, 2.0, 0.0]]))
    assert torch.equal(acts[1], T([[0.0, 2.0]]))
    y = tc.reconstruct(acts, x)
    # layer 0: 2*[0,1] + b_dec [0.5,-0.5] + skip x@W_skip.T = [3, 0]  -> [3.5, 1.5]
    # layer 1: 2*[0,2] + b_dec [1,1]      + skip [0, 2]              -> [1, 7]
    assert torch.equal(y, T([[[3.5, 1.5]], [[1.0, 7.0]]]))


def hand_clt(skip: bool = False) -> Transcoders:
    """L=2, d=2, F=2; layer-0 features write to layers 0 and 1."""
    return Transcoders(
        kind="clt",
        W_enc=[T([[1.0, 0.0], [0.0, 1.0]]), T([[1.0, 1.0], [1.0, -1.0]])],
        b_enc=[T([0.0, 0.0]), T([0.0, 0.0])],
        # W_dec[0][f, j] writes to layer j; W_dec[1][f, 0] writes to layer 1
        W_dec=[T([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 3.0]]]), T([[[1.0, 1.0]], [[-1.0, 0.0]]])],
        b_dec=[T([0.0, 0.1]), T([0.2, 0.0])],
        activation="relu",
        W_skip=[T([[0.0, 1.0], [0.0, 0.0]]), T([[0.0, 1.0], [0.0, 0.0]])] if skip else None,
    )


def test_clt_reconstruct_by_hand():
    tc = hand_clt()
    assert list(tc.output_layers(0)) == [0, 1] and list(tc.output_layers(1)) == [1]
    x = T([[[1.0, 2.0]], [[3.0, 1.0]]])
    acts = [tc.activate(l, tc.encode(l, x[l])) for l in range(2)]
    assert torch.equal(acts[0], T([[1.0, 2.0]])) and torch.equal(acts[1], T([[4.0, 2.0]]))
    y = tc.reconstruct(acts, x)
    # layer 0: 1*[1,0] + 2*[2,0] + [0,0.1]                          = [5, 0.1]
    # layer 1: 1*[0,1] + 2*[0,3] + 4*[1,1] + 2*[-1,0] + [0.2, 0]    = [2.2, 11]
    assert torch.allclose(y, T([[[5.0, 0.1]], [[2.2, 11.0]]]))


def test_skip_convention_is_x_times_W_skip_transposed_for_plt_and_clt():
    W = T([[0.0, 1.0], [0.0, 0.0]])  # asymmetric: x @ W.T = [x1, 0], x @ W = [0, x0]
    x = T([[2.0, 3.0]])
    plt, clt = hand_plt(skip=True), hand_clt(skip=True)
    assert torch.equal(plt.skip(0, x), T([[3.0, 0.0]]))
    assert torch.equal(clt.skip(0, x), T([[3.0, 0.0]]))
    assert torch.equal(clt.skip(1, x), x @ clt.W_skip[1].T)
    # reconstruct adds the same skip term for both kinds
    xs = torch.stack([x, x])
    zero = [torch.zeros(1, plt.width(l)) for l in range(2)]
    y_plt = plt.reconstruct(zero, xs) - torch.stack(plt.b_dec)[:, None]
    y_clt = clt.reconstruct([torch.zeros(1, 2)] * 2, xs) - torch.stack(clt.b_dec)[:, None]
    assert torch.equal(y_plt[0], x @ W.T) and torch.equal(y_clt[0], x @ W.T)
    assert plt.skip(0, x) is not None and hand_plt().skip(0, x) is None


def test_to_casts_floats_and_reports_dtype():
    tc = hand_plt().to(dtype=torch.float64)
    assert tc.dtype == torch.float64 and tc.threshold[1].dtype == torch.float64
    assert tc.device == torch.device("cpu")


def test_shape_facts():
    tc = hand_plt()
    assert (tc.n_layers, tc.d_model, tc.width(0), tc.width(1), tc.has_skip) == (2, 2, 3, 2, False)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(kind="mlp"), "kind must be 'plt' or 'clt'"),
        (dict(activation="gelu"), "unknown activation"),
        (dict(threshold=None), "needs thresholds"),
        (dict(activation="topk"), "needs k"),
        (dict(input_hook="hook_resid_pre"), "unknown transcoder input hook"),
        (dict(output_hook="blocks.3.hook_resid_post"), "unknown transcoder output hook"),
        (dict(kind="clt"), "expected (3, 2, 2) for a CLT"),
        (dict(b_dec=[T([0.0])]), "entries of b_dec"),
    ],
)
def test_class_rejects_bad_construction(change, message):
    tc = hand_plt()
    fields = {key: getattr(tc, key) for key in ("kind", "W_enc", "b_enc", "W_dec", "b_dec", "activation", "threshold")}
    fields.update(change)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Transcoders(**fields)


def test_hook_names_accept_blocks_prefix():
    tc = hand_plt()
    tc2 = Transcoders(
        kind="plt",
        W_enc=tc.W_enc,
        b_enc=tc.b_enc,
        W_dec=tc.W_dec,
        b_dec=tc.b_dec,
        activation="relu",
        input_hook="blocks.4.ln2.hook_normalized",
        output_hook="blocks.4.mlp.hook_out",
    )
    assert (tc2.input_hook, tc2.output_hook) == ("ln2.hook_normalized", "mlp.hook_out")
