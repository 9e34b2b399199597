"""tying.nn.CrossStitch: the mixing formula against an explicit loop, its two extremes, gradients,
and bad input naming the task."""

from __future__ import annotations

import doctest

import pytest
import torch

import tying.nn.cross_stitch
from tying.nn import CrossStitch


def loop_reference(weight: torch.Tensor, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """x̃_i = Σ_j α_ij x_j, element by element (per channel when weight is (C, T, T))."""
    t = len(xs)
    out = []
    for i in range(t):
        acc = torch.zeros_like(xs[0])
        for j in range(t):
            if weight.dim() == 2:
                acc = acc + weight[i, j] * xs[j]
            else:
                shape = [1, -1] + [1] * (xs[j].dim() - 2)
                acc = acc + weight[:, i, j].reshape(shape) * xs[j]
        out.append(acc)
    return out


def test_docstring_examples():
    result = doctest.testmod(tying.nn.cross_stitch)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("t", [2, 3, 4])
def test_init_rows_sum_to_one_with_self_weight_on_the_diagonal(t):
    unit = CrossStitch(t, channels=5, self_weight=0.7)
    w = unit.weight.detach()
    assert w.shape == (5, t, t)
    torch.testing.assert_close(w.sum(-1), torch.ones(5, t))
    torch.testing.assert_close(torch.diagonal(w, dim1=-2, dim2=-1), torch.full((5, t), 0.7))
    assert torch.allclose(w[0, 0, 1], torch.tensor((1 - 0.7) / (t - 1)))


@pytest.mark.parametrize("channels,shape", [(None, (4, 6)), (None, (4, 3, 5, 5)),
                                            (3, (4, 3)), (3, (4, 3, 5, 2))])
def test_forward_matches_explicit_loop(channels, shape):
    torch.manual_seed(0)
    unit = CrossStitch(3, channels=channels).double()
    with torch.no_grad():
        unit.weight.normal_()               # arbitrary α, not the init
    xs = [torch.randn(shape, dtype=torch.float64) for _ in range(3)]
    got = unit(xs)
    for g, r in zip(got, loop_reference(unit.weight.detach(), xs)):
        torch.testing.assert_close(g, r)


def test_identity_keeps_towers_apart_and_equal_rows_make_them_one():
    xs = [torch.randn(2, 4) for _ in range(3)]
    apart = CrossStitch(3, self_weight=1.0)
    for x, y in zip(xs, apart(xs)):
        torch.testing.assert_close(x, y)
    one = CrossStitch(3, self_weight=1 / 3)
    outs = one(xs)
    mean = torch.stack(xs).mean(0)
    for y in outs:
        torch.testing.assert_close(y, mean)


def test_gradients_are_correct():
    unit = CrossStitch(2, channels=2).double()
    xs = [torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    w = unit.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w, a, b: torch.cat(
        [o.flatten() for o in loop_reference(w, [a, b])]), (w, *xs))
    loss = sum(o.square().sum() for o in unit(xs))
    loss.backward()
    assert unit.weight.grad is not None and unit.weight.grad.abs().sum() > 0
    # autograd through the einsum equals autograd through the loop
    w2 = unit.weight.detach().clone().requires_grad_(True)
    sum(o.square().sum() for o in loop_reference(w2, [x.detach() for x in xs])).backward()
    torch.testing.assert_close(unit.weight.grad, w2.grad)


def test_mapping_in_mapping_out_in_task_order():
    unit = CrossStitch(["b", "a"], self_weight=1.0)
    out = unit({"a": torch.zeros(1, 2), "b": torch.ones(1, 2)})
    assert list(out) == ["b", "a"]
    assert out["b"].sum() == 2 and out["a"].sum() == 0


def test_dtype_and_device_arguments():
    unit = CrossStitch(2, channels=3, dtype=torch.float64, device="cpu")
    assert unit.weight.dtype == torch.float64 and unit.weight.device.type == "cpu"


def test_bad_input_names_the_task():
    unit = CrossStitch(["item", "group", "parity"])
    with pytest.raises(ValueError, match=r"'group'.*shape"):
        unit({"item": torch.zeros(2, 3), "group": torch.zeros(2, 4), "parity": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"missing \['parity'\].*unknown \['colour'\]"):
        unit({"item": torch.zeros(2, 3), "group": torch.zeros(2, 3),
              "colour": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="got 2 activations"):
        unit([torch.zeros(2, 3)] * 2)
    with pytest.raises(TypeError, match="'group'"):
        unit([torch.zeros(2, 3), [0.0], torch.zeros(2, 3)])
    with pytest.raises(ValueError, match=r"channels=4.*\(2, 3\)"):
        CrossStitch(2, channels=4)([torch.zeros(2, 3)] * 2)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"tasks": 1}, ValueError, "at least 2"),
    ({"tasks": ["a", "a"]}, ValueError, "unique"),
    ({"tasks": "ab"}, TypeError, "tasks"),
    ({"tasks": 2, "channels": 0}, ValueError, "channels"),
    ({"tasks": 2, "self_weight": 1.5}, ValueError, "self_weight"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        CrossStitch(**kwargs)
