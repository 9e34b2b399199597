"""HashedNets (Chen et al. 2015): virtual weights hashed into a small shared vector.

W_ij = ξ(i, j) · w[h(i, j)] with h a hash into K buckets and ξ a sign hash in {−1, +1}; one hash
per layer (its ``seed``); the indices are recomputed from the seed, never stored. The
compression factor of a layer is K / (virtual weights).

>>> import torch
>>> layer = HashedLinear(100, 50, compression=1 / 8)
>>> layer.weight.numel(), layer.virtual_weight().shape
(625, torch.Size([50, 100]))
>>> layer(torch.zeros(3, 100)).shape
torch.Size([3, 50])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HashedConv2d", "HashedLinear"]

_M = (1 << 61) - 1


def _hash(n: int, seed: int, salt: int) -> torch.Tensor:
    """A deterministic 2-universal-style hash of 0..n-1 (int64, non-negative)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + salt) & 0x7FFFFFFF)
    a, b = (int(x) for x in torch.randint(1, 1 << 30, (2,), generator=g))
    i = torch.arange(n, dtype=torch.int64)
    x = (i * a + b) & 0x7FFFFFFF
    x = (x ^ (x >> 13)) * 0x5BD1E995 & 0x7FFFFFFF
    return x ^ (x >> 15)


class _Hashed(nn.Module):
    def _setup(self, virtual_shape, buckets, compression, seed, bias_size, factory):
        n = math.prod(virtual_shape)
        if buckets is None:
            if compression is None or not 0 < compression <= 1:
                raise ValueError(f"compression must be in (0, 1] (K / virtual weights), got "
                                 f"{compression!r}; or give buckets=K")
            buckets = max(1, round(n * compression))
        if not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f"buckets must be a positive int, got {buckets!r}")
        self.virtual_shape, self.buckets, self.seed = tuple(virtual_shape), buckets, int(seed)
        self.weight = nn.Parameter(torch.empty(buckets, **factory))
        self.bias = nn.Parameter(torch.empty(bias_size, **factory)) if bias_size else None
        self.register_buffer("_idx", _hash(n, seed, 1) % buckets, persistent=False)
        sign = (_hash(n, seed, 2) & 1).to(factory.get("dtype") or torch.get_default_dtype())
        self.register_buffer("_sign", sign * 2 - 1, persistent=False)
        self._fan_in = math.prod(virtual_shape[1:])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self._fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    @property
    def compression_factor(self) -> float:
        """K / (virtual weights)."""
        return self.buckets / math.prod(self.virtual_shape)

    def virtual_weight(self) -> torch.Tensor:
        """The dense W_ij = ξ(i, j) · w[h(i, j)]."""
        return (self.weight[self._idx] * self._sign).view(self.virtual_shape)


class HashedLinear(_Hashed):
    """A Linear layer whose out×in weights are hashed into ``buckets`` shared values.

    Args:
        in_features / out_features: as `torch.nn.Linear`.
        compression: K / (in · out) when ``buckets`` is not given (e.g. 1/8).
        buckets: K, the number of real weights.
        seed: selects the layer's hash (use a different one per layer).

    Example:
        >>> layer = HashedLinear(100, 50, buckets=625, seed=3)
        >>> layer.weight.numel(), layer.compression_factor
        (625, 0.125)
        >>> layer(torch.zeros(3, 100)).shape
        torch.Size([3, 50])
    """

    def __init__(self, in_features: int, out_features: int, *, compression: float | None = 0.125,
                 buckets: int | None = None, seed: int = 0, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._setup((out_features, in_features), buckets, compression, seed,
                    out_features if bias else 0, {"device": device, "dtype": dtype})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.virtual_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, buckets={self.buckets}, "
                f"compression={self.compression_factor:.4g}, seed={self.seed}")


class HashedConv2d(_Hashed):
    """A Conv2d whose out×in×k×k kernel is hashed into ``buckets`` shared values.

    Example:
        >>> conv = HashedConv2d(1, 20, 5, compression=1 / 4, seed=1)
        >>> conv.weight.numel(), conv.compression_factor      # K = 500 · 1/4
        (125, 0.25)
        >>> conv(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 20, 24, 24])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 compression: float | None = 0.125, buckets: int | None = None, seed: int = 0,
                 stride: int = 1, padding: int = 0, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = (in_channels, out_channels,
                                                                 kernel_size)
        self.stride, self.padding = stride, padding
        self._setup((out_channels, in_channels, kernel_size, kernel_size), buckets, compression,
                    seed, out_channels if bias else 0, {"device": device, "dtype": dtype})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.virtual_weight(), self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"buckets={self.buckets}, compression={self.compression_factor:.4g}")
