"""LocallyConnected1d/2d: the unshared twins compute what their shared peers compute when every
position holds the same weights, and nothing is shared otherwise."""

import pytest
import torch

from tying.nn import LocallyConnected1d, LocallyConnected2d, TimeDelay


@pytest.mark.parametrize("context,stride", [((-2, -1, 0), 1), ((-3, 0, 3), 2), ((-9, 0, 1), 2),
                                            ((-7, 2), 3)])
def test_1d_twin_with_copied_weights_equals_time_delay(context, stride):
    td = TimeDelay(3, 4, context=context, stride=stride).double()
    lc = LocallyConnected1d.from_time_delay(td, 24, copy_weights=True)
    x = torch.randn(2, 3, 24, dtype=torch.float64)
    torch.testing.assert_close(lc(x), td(x))
    assert lc.activation == "tanh" and lc.context == td.context


def test_1d_positions_are_independent():
    lc = LocallyConnected1d(2, 3, 10, window=3).double()
    x = torch.randn(1, 2, 10, dtype=torch.float64)
    before = lc(x).detach()
    with torch.no_grad():
        lc.weight[4].add_(1.0)  # only output frame 4 owns these weights
    diff = (lc(x) - before).abs().sum(dim=(0, 1))
    assert diff[4] > 0 and torch.count_nonzero(diff) == 1


def test_1d_parameters_grow_with_length_and_gradcheck():
    counts = [sum(p.numel() for p in LocallyConnected1d(4, 5, t, window=3).parameters())
              for t in (10, 20, 40)]
    assert counts == [(t - 2) * (4 * 5 * 3 + 5) for t in (10, 20, 40)]
    lc = LocallyConnected1d(2, 2, 8, context=(-2, 0, 1), activation="tanh").double()
    x = torch.randn(2, 2, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lc, (x,))
    w_in = torch.autograd.gradcheck(
        lambda w: torch.func.functional_call(lc, {"weight": w}, (x.detach(),)),
        (lc.weight.detach().clone().requires_grad_(),))
    assert w_in


@pytest.mark.parametrize("kernel,stride,padding,size", [(3, 1, 0, (8, 8)), (3, 2, 1, (9, 11)),
                                                        ((3, 2), (1, 2), (0, 1), (7, 6))])
def test_2d_twin_with_copied_weights_equals_conv2d(kernel, stride, padding, size):
    conv = torch.nn.Conv2d(3, 5, kernel, stride=stride, padding=padding).double()
    lc = LocallyConnected2d.from_conv2d(conv, size, copy_weights=True)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(lc(x), conv(x))


def test_2d_parameters_and_gradcheck():
    lc = LocallyConnected2d(2, 3, (5, 6), 3)
    assert lc.output_size == (3, 4)
    assert sum(p.numel() for p in lc.parameters()) == 12 * 3 * 2 * 9 + 3 * 12
    lc = lc.double()
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lc, (x,))


def test_2d_connections_store_only_connected_kernels():
    conn = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)  # (out, in)
    lc = LocallyConnected2d(3, 2, 6, 3, connections=conn).double()
    assert lc.weight.shape == (16, 3, 3, 3)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    y = lc(x)
    x2 = x.clone()
    x2[:, 1] += 1.0  # input map 1 feeds only output map 1
    y2 = lc(x2)
    torch.testing.assert_close(y[:, 0], y2[:, 0])
    assert not torch.allclose(y[:, 1], y2[:, 1])
    assert torch.autograd.gradcheck(
        lambda w: torch.func.functional_call(lc, {"weight": w}, (x,)),
        (lc.weight.detach().clone().requires_grad_(),))
    with pytest.raises(ValueError, match="connections must have shape"):
        LocallyConnected2d(3, 2, 6, 3, connections=conn.T)


def test_bad_inputs():
    lc1 = LocallyConnected1d(3, 2, 10, window=3)
    with pytest.raises(ValueError, match=r"\(B, C=3, T=10\).*\(1, 3, 11\)"):
        lc1(torch.randn(1, 3, 11))
    with pytest.raises(ValueError, match="shorter than the context"):
        LocallyConnected1d(3, 2, 2, window=3)
    lc2 = LocallyConnected2d(1, 2, 8, 3)
    with pytest.raises(ValueError, match=r"H=8, W=8.*\(1, 1, 9, 8\)"):
        lc2(torch.randn(1, 1, 9, 8))
    with pytest.raises(ValueError, match="smaller than kernel_size"):
        LocallyConnected2d(1, 2, 2, 3)
    assert "input_size=(8, 8)" in repr(lc2) and "input_length=10" in repr(lc1)
