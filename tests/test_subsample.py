"""Subsample: the seed's y_t = (1/r) Σ_{k<r} y_{rt−k}, its gradient ∂C/∂y · 1/r, bad ratios."""

import pytest
import torch

from tying.nn import Subsample


def seed_subsample(x, r):
    """Block u averages input frames r·u … r·u + r − 1 (the seed's rt − k, k < r)."""
    n = x.shape[2] // r
    return torch.stack([sum(x[:, :, r * u + r - 1 - k] for k in range(r)) / r
                        for u in range(n)], dim=-1)


@pytest.mark.parametrize("r", [1, 2, 3, 4])
@pytest.mark.parametrize("t", [12, 13, 14])
def test_matches_seed_equation(r, t):
    x = torch.randn(2, 3, t, dtype=torch.float64)
    y = Subsample(r)(x)
    assert y.shape == (2, 3, t // r)
    torch.testing.assert_close(y, seed_subsample(x, r))


@pytest.mark.parametrize("r", [2, 3])
def test_gradient_is_upstream_over_r(r):
    """∂C/∂y_{rt−k} = ∂C/∂y_t · 1/r; frames past the last full block get no gradient."""
    x = torch.randn(2, 3, 3 * r + 1, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 3, dtype=torch.float64)
    (Subsample(r)(x) * g).sum().backward()
    expected = torch.zeros_like(x)
    expected[:, :, : 3 * r] = g.repeat_interleave(r, dim=2) / r
    torch.testing.assert_close(x.grad, expected)


def test_only_one_output_per_block_is_computed():
    x = torch.arange(10.0).view(1, 1, 10)
    assert Subsample(3)(x).flatten().tolist() == [1.0, 4.0, 7.0]


def test_trainable_coefficient_and_bias():
    sub = Subsample(2, trainable=True, channels=3)
    assert sum(p.numel() for p in sub.parameters()) == 6
    x = torch.randn(4, 3, 10)
    torch.testing.assert_close(sub(x), Subsample(2)(x))  # starts as the plain average
    with torch.no_grad():
        sub.coefficient.copy_(torch.tensor([1.0, -2.0, 0.5]))
        sub.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    block_sum = x.view(4, 3, 5, 2).sum(-1)
    expected = block_sum * sub.coefficient.view(1, 3, 1) + sub.bias.view(1, 3, 1)
    torch.testing.assert_close(sub(x), expected)
    sub.reset_parameters()
    assert torch.allclose(sub.coefficient, torch.full((3,), 0.5))


def test_trainable_gradcheck_and_2d():
    sub = Subsample(2, trainable=True, channels=2, ndim=2, activation="tanh").double()
    x = torch.randn(1, 2, 6, 4, dtype=torch.float64, requires_grad=True)
    c = sub.coefficient.detach().clone().requires_grad_()
    b = sub.bias.detach().clone().requires_grad_()
    fn = lambda x, c, b: torch.func.functional_call(sub, {"coefficient": c, "bias": b}, (x,))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, c, b))
    y = sub(x)
    assert y.shape == (1, 2, 3, 2)
    manual = torch.tanh(x.detach().view(1, 2, 3, 2, 2, 2).sum(dim=(3, 5)) * c.view(1, 2, 1, 1)
                        + b.view(1, 2, 1, 1))
    torch.testing.assert_close(y, manual)


def test_bad_inputs():
    with pytest.raises(ValueError, match="ratio must be >= 1"):
        Subsample(0)
    with pytest.raises(TypeError, match="integer"):
        Subsample(1.5)
    with pytest.raises(TypeError, match="integer"):
        Subsample(True)
    with pytest.raises(ValueError, match="channels=C"):
        Subsample(2, trainable=True)
    with pytest.raises(ValueError, match=r"\(B, C, T\).*\(3, 8\)"):
        Subsample(2)(torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"C=3"):
        Subsample(2, trainable=True, channels=3)(torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match="shorter than ratio=4"):
        Subsample(4)(torch.randn(1, 1, 3))
    assert "ratio=2" in repr(Subsample(2))
