"""Locally connected layers: the unshared twins of `TimeDelay` and `Conv2d`.

Same receptive fields, separate weights (and biases) at every output position, so the parameter
count grows with the input length (or area) — what a TDNN or LeNet saves by sharing. Both layers
compute all positions in one batched matmul (``torch.bmm`` over positions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .time_delay import TimeDelay, check_stride, get_activation, normalize_context

__all__ = ["LocallyConnected1d", "LocallyConnected2d"]


def _positive(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def _pair(name: str, v) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    if not (isinstance(v, (tuple, list)) and len(v) == 2):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    return (_positive(name, v[0]), _positive(name, v[1]))


class LocallyConnected1d(nn.Module):
    """A `TimeDelay` without sharing: weights W[t, i, j, m] and bias b[t, i] per output frame.

    Args:
        in_channels, out_channels, window, context, stride, activation, bias: as `TimeDelay`
            (``activation`` defaults to None here; `from_time_delay` copies the twin's).
        input_length: T, fixed: the layer has one weight set per output frame.

    Example:
        >>> lc = LocallyConnected1d(16, 8, input_length=15, window=3)
        >>> lc(torch.randn(2, 16, 15)).shape, lc.weight.shape
        (torch.Size([2, 8, 13]), torch.Size([13, 8, 16, 3]))
    """

    def __init__(self, in_channels: int, out_channels: int, input_length: int,
                 window: int | None = None, *, context: Sequence[int] | None = None,
                 stride: int = 1, activation: str | Callable | None = None, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.in_channels = _positive("in_channels", in_channels)
        self.out_channels = _positive("out_channels", out_channels)
        self.input_length = _positive("input_length", input_length)
        self.context = normalize_context(window, context)
        self.stride = check_stride(stride)
        self.span = self.context[-1] - self.context[0]
        if input_length < self.span + 1:
            raise ValueError(f"input_length={input_length} is shorter than the context "
                             f"{self.context} (needs at least {self.span + 1} frames)")
        self.output_length = (input_length - self.span - 1) // self.stride + 1
        self.activation = activation
        self._act = get_activation(activation)
        factory = {"device": device, "dtype": dtype}
        t, k = self.output_length, len(self.context)
        self.weight = nn.Parameter(torch.empty(t, out_channels, in_channels, k, **factory))
        self.bias = nn.Parameter(torch.empty(t, out_channels, **factory)) if bias else None
        self.reset_parameters()

    @classmethod
    def from_time_delay(cls, layer: TimeDelay, input_length: int, *,
                        copy_weights: bool = False) -> LocallyConnected1d:
        """The unshared twin of ``layer`` for inputs of ``input_length`` frames.

        With ``copy_weights`` every position starts from the shared weights (then the two
        layers compute the same function until training unties them).
        """
        w = layer.weight
        twin = cls(layer.in_channels, layer.out_channels, input_length, context=layer.context,
                   stride=layer.stride, activation=layer.activation, bias=layer.bias is not None,
                   device=w.device, dtype=w.dtype)
        if copy_weights:
            with torch.no_grad():
                twin.weight.copy_(w.expand_as(twin.weight))
                if twin.bias is not None:
                    twin.bias.copy_(layer.bias.expand_as(twin.bias))
        return twin

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels * len(self.context))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels or x.shape[2] != self.input_length:
            raise ValueError(f"LocallyConnected1d expects input of shape (B, C={self.in_channels}"
                             f", T={self.input_length}), got {tuple(x.shape)}; it has separate "
                             f"weights per frame, so T is fixed")
        t_out, b = self.output_length, x.shape[0]
        win = x.permute(2, 0, 1).unfold(0, self.span + 1, self.stride)  # (T_out, B, C, span+1)
        if len(self.context) != self.span + 1:  # sparse context: keep only its offsets
            win = win[..., [o - self.context[0] for o in self.context]]
        cols = win.reshape(t_out, b, -1)  # (T_out, B, C·K): one gather copy
        w = self.weight.reshape(t_out, self.out_channels, -1)  # (T_out, O, C·K)
        if self.bias is not None:
            y = torch.baddbmm(self.bias.unsqueeze(1), cols, w.transpose(1, 2))
        else:
            y = torch.bmm(cols, w.transpose(1, 2))  # (T_out, B, O)
        y = _contiguous_grad(y)
        y = y.permute(1, 2, 0)  # (B, O, T_out)
        return y if self._act is None else self._act(y)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, input_length={self.input_length}, "
                f"context={self.context}, stride={self.stride}, activation={self.activation}, "
                f"bias={self.bias is not None}")


class LocallyConnected2d(nn.Module):
    """A `Conv2d` without sharing: a separate kernel and bias at every output pixel.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as `torch.nn.Conv2d`.
        input_size: (H, W) of the input, fixed.
        bias: a bias per output channel and pixel.
        connections: optional bool tensor (out_channels, in_channels): which input maps feed
            which output map (LeNet-5's C3 table); only connected kernels are stored.
        activation: applied to the output; None by default.

    Example:
        >>> lc = LocallyConnected2d(1, 6, input_size=32, kernel_size=5)
        >>> lc(torch.randn(2, 1, 32, 32)).shape, sum(p.numel() for p in lc.parameters())
        (torch.Size([2, 6, 28, 28]), 122304)
    """

    def __init__(self, in_channels: int, out_channels: int, input_size, kernel_size, *,
                 stride=1, padding=0, bias: bool = True,
                 connections: torch.Tensor | None = None,
                 activation: str | Callable | None = None, device=None, dtype=None) -> None:
        super().__init__()
        self.in_channels = _positive("in_channels", in_channels)
        self.out_channels = _positive("out_channels", out_channels)
        self.input_size = _pair("input_size", input_size)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.stride = _pair("stride", stride)
        if isinstance(padding, int) and padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        out = []
        for n, k, s, p in zip(self.input_size, self.kernel_size, self.stride, self.padding):
            if n + 2 * p < k:
                raise ValueError(f"input_size={self.input_size} (padding {self.padding}) is "
                                 f"smaller than kernel_size={self.kernel_size}")
            out.append((n + 2 * p - k) // s + 1)
        self.output_size = (out[0], out[1])
        self.activation = activation
        self._act = get_activation(activation)
        factory = {"device": device, "dtype": dtype}
        n_pos = out[0] * out[1]
        kh, kw = self.kernel_size
        if connections is not None:
            conn = torch.as_tensor(connections, dtype=torch.bool)
            if conn.shape != (out_channels, in_channels):
                raise ValueError(f"connections must have shape (out_channels={out_channels}, "
                                 f"in_channels={in_channels}), got {tuple(conn.shape)}")
            if not conn.any(dim=1).all():
                raise ValueError("every output map needs at least one input map in connections")
            oi, ii = conn.nonzero(as_tuple=True)
            self.register_buffer("connections", conn, persistent=False)
            self.register_buffer("_out_idx", oi, persistent=False)
            self.register_buffer("_in_idx", ii, persistent=False)
            self.weight = nn.Parameter(torch.empty(n_pos, len(oi), kh, kw, **factory))
        else:
            self.connections = None
            self.weight = nn.Parameter(torch.empty(n_pos, out_channels, in_channels, kh, kw,
                                                   **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, *self.output_size, **factory)) \
            if bias else None
        self.reset_parameters()

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, input_size, *,
                    copy_weights: bool = False) -> LocallyConnected2d:
        """The unshared twin of ``conv`` (groups=1, dilation=1) for ``input_size`` inputs."""
        if conv.groups != 1 or conv.dilation != (1, 1) or isinstance(conv.padding, str):
            raise ValueError("from_conv2d supports groups=1, dilation=1 and integer padding")
        twin = cls(conv.in_channels, conv.out_channels, input_size, conv.kernel_size,
                   stride=conv.stride, padding=conv.padding, bias=conv.bias is not None,
                   device=conv.weight.device, dtype=conv.weight.dtype)
        if copy_weights:
            with torch.no_grad():
                twin.weight.copy_(conv.weight.expand_as(twin.weight))
                if twin.bias is not None:
                    twin.bias.copy_(conv.bias[:, None, None].expand_as(twin.bias))
        return twin

    def fan_in(self) -> torch.Tensor:
        """Inputs feeding each output unit (per output map)."""
        k = self.kernel_size[0] * self.kernel_size[1]
        if self.connections is None:
            return torch.full((self.out_channels,), self.in_channels * k)
        return self.connections.sum(dim=1) * k

    def reset_parameters(self) -> None:
        bound = 1.0 / self.fan_in().double().sqrt()  # (O,)
        with torch.no_grad():
            if self.connections is None:
                b = bound.view(1, -1, 1, 1, 1)
            else:
                b = bound[self._out_idx].view(1, -1, 1, 1)
            self.weight.uniform_(-1.0, 1.0).mul_(b.to(self.weight))
            if self.bias is not None:
                self.bias.uniform_(-1.0, 1.0).mul_(bound.view(-1, 1, 1).to(self.bias))

    def full_weight(self) -> torch.Tensor:
        """(positions, O, C, kh, kw), zeros where ``connections`` is False."""
        if self.connections is None:
            return self.weight
        n_pos, (kh, kw) = self.weight.shape[0], self.kernel_size
        full = self.weight.new_zeros(n_pos, self.out_channels, self.in_channels, kh, kw)
        return _scatter(full, self._out_idx, self._in_idx, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != \
                self.input_size:
            h, w = self.input_size
            raise ValueError(f"LocallyConnected2d expects input of shape (B, C={self.in_channels}"
                             f", H={h}, W={w}), got {tuple(x.shape)}; it has separate weights "
                             f"per pixel, so the image size is fixed")
        b = x.shape[0]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        # Position-major im2col from views: (H, W, B, C) → windows (Ho, Wo, B, C, kh, kw); one
        # gather copy, ~3× faster than F.unfold + a transpose.
        win = x.permute(2, 3, 0, 1).unfold(0, kh, sh).unfold(1, kw, sw)
        n_pos = self.output_size[0] * self.output_size[1]
        cols = win.reshape(n_pos, b, -1)  # (L, B, C·kh·kw)
        w = self.full_weight().reshape(n_pos, self.out_channels, -1)  # (L, O, C·kh·kw)
        y = _contiguous_grad(torch.bmm(cols, w.transpose(1, 2)))  # (L, B, O)
        y = y.permute(1, 2, 0).reshape(b, self.out_channels, *self.output_size)
        if self.bias is not None:
            y = y + self.bias
        return y if self._act is None else self._act(y)

    def extra_repr(self) -> str:
        conn = "" if self.connections is None else \
            f", connections={int(self.connections.sum())}/{self.connections.numel()}"
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"bias={self.bias is not None}{conn}")


def _contiguous_grad(t: torch.Tensor) -> torch.Tensor:
    """Identity whose incoming gradient is made contiguous (one copy instead of one per batch)."""
    if t.requires_grad:
        t.register_hook(lambda g: None if g is None else g.contiguous())
    return t


def _scatter(full: torch.Tensor, out_idx: torch.Tensor, in_idx: torch.Tensor,
             packed: torch.Tensor) -> torch.Tensor:
    """``full[:, out_idx[n], in_idx[n]] = packed[:, n]``, differentiably (out of place)."""
    flat = full.flatten(1, 2)  # (L, O·C, kh, kw)
    idx = out_idx * full.shape[2] + in_idx
    return flat.index_copy(1, idx, packed).view_as(full)
