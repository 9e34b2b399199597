"""HashedLinear / HashedConv2d: W_ij = ξ(i,j) · w[h(i,j)], deterministic, K / (m·n)."""

import pytest
import torch

from tying.nn import HashedConv2d, HashedLinear


def test_hashed_linear_matches_its_virtual_dense_weight():
    layer = HashedLinear(40, 30, buckets=100, seed=3)
    x = torch.randn(5, 40)
    w = layer.virtual_weight()
    assert torch.allclose(layer(x), x @ w.T + layer.bias, atol=1e-6)
    assert layer.weight.numel() == 100
    assert layer.compression_factor == pytest.approx(100 / 1200)
    # every virtual weight is ± one of the real weights
    assert torch.isin(w.abs(), layer.weight.detach().abs()).all()
    # signs: both appear
    assert (layer._sign > 0).any() and (layer._sign < 0).any()


def test_hash_is_deterministic_per_seed_and_differs_across_seeds():
    a, b, c = HashedLinear(20, 10, seed=1), HashedLinear(20, 10, seed=1), HashedLinear(
        20, 10, seed=2)
    assert torch.equal(a._idx, b._idx) and torch.equal(a._sign, b._sign)
    assert not torch.equal(a._idx, c._idx)
    # buckets are used roughly evenly
    counts = torch.bincount(a._idx, minlength=a.buckets)
    assert counts.max() <= 4 * counts.float().mean()


def test_hashed_conv_matches_conv2d_with_virtual_weight():
    conv = HashedConv2d(3, 8, 3, compression=0.25, padding=1, seed=5)
    x = torch.randn(2, 3, 9, 9)
    ref = torch.nn.functional.conv2d(x, conv.virtual_weight(), conv.bias, padding=1)
    assert torch.allclose(conv(x), ref, atol=1e-6)
    assert conv.buckets == round(8 * 3 * 9 * 0.25)


def test_gradients_flow_to_buckets_and_bad_arguments():
    layer = HashedLinear(6, 4, buckets=5)
    layer(torch.randn(3, 6)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="compression"):
        HashedLinear(6, 4, compression=0.0)
    with pytest.raises(ValueError, match="buckets"):
        HashedLinear(6, 4, buckets=0)


def test_docstring_examples_run():
    import doctest
    import importlib

    module = importlib.import_module("tying.nn.hashed")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
