"""`TimeDelay`: the TDNN layer, one set of weights shared by every time step.

The seed's equation (window K): s_{t,i} = Σ_{k<K} Σ_j w_{i,j,k} · y_{t−k,j} + b_i, y = tanh(s).
With Kaldi-style context offsets O = {o_0 < o_1 < …} it reads s_{t,i} = Σ_m Σ_j W[i,j,m] ·
y_{t+o_m,j} + b_i; a window K is the context {−(K−1), …, 0}, and the seed's lag k is
``weight[:, :, K − 1 − k]``. Only the frames whose whole context lies inside the input are
computed ("valid"), and with ``stride`` s only every s-th of those: frames the next layer drops are
never computed.

How: a full-rate evenly spaced context is one ``F.conv1d`` call when oneDNN is at its best there
(a contiguous window, or a dilated one on 128+ input channels). Otherwise — strides, uneven
contexts such as {−9, 0, 1}, gaps on thin inputs — the kept frames of each offset are gathered
side by side and the layer is one GEMM over the whole batch with hand-written GEMM gradients
(`_SplicedMatmul`): no unfold, no frame that the output drops. Both give the same values (to float
rounding) and the same gradients. The GEMM path's output is laid out time-major in memory (a
(B, C_out, T_out) tensor with the strides of a transposed (C_out, B, T_out) one; ``.contiguous()``
it before ``.view``): a gradient that comes back in that layout, as from an elementwise
activation, needs no copy, and the next GEMM layer gathers its frames from contiguous rows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["TimeDelay", "get_activation", "normalize_context"]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    # LeCun et al. 1998: f(a) = A·tanh(S·a), A = 1.7159, S = 2/3.
    "lecun_tanh": lambda x: 1.7159 * torch.tanh(x * (2.0 / 3.0)),
}


def get_activation(activation: str | Callable | None) -> Callable | None:
    """Resolve an activation given by name (``tanh``, ``relu``, ...), callable, or None."""
    if activation is None or activation == "identity":
        return None
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is unknown; choose one of "
                             f"{sorted([*_ACTIVATIONS, 'identity'])}, a callable, or None")
        return _ACTIVATIONS[activation]
    if callable(activation):
        return activation
    raise TypeError(f"activation must be a name, a callable or None, got "
                    f"{type(activation).__name__}")


def normalize_context(window: int | None, context: Sequence[int] | None) -> tuple[int, ...]:
    """The sorted context offsets from either ``window=K`` or ``context=offsets`` (not both)."""
    if (window is None) == (context is None):
        raise ValueError("give exactly one of window=K (the seed's s_t = Σ_{k<K} w_k y_{t−k}) "
                         "or context=offsets (e.g. (-3, 0, 3))")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int):
            raise TypeError(f"window must be an int, got {type(window).__name__} {window!r}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        return tuple(range(-(window - 1), 1))
    if isinstance(context, (str, bytes)) or not isinstance(context, Sequence):
        raise TypeError(f"context must be a sequence of integer offsets such as (-3, 0, 3), "
                        f"got {type(context).__name__}")
    bad = [o for o in context if isinstance(o, bool) or not isinstance(o, int)]
    if bad:
        raise TypeError(f"context offsets must be integers, got {bad} in {tuple(context)}")
    if not context:
        raise ValueError("context must hold at least one offset, e.g. (0,)")
    dup = sorted({o for o in context if list(context).count(o) > 1})
    if dup:
        raise ValueError(f"context offsets must be distinct; {dup} repeated in {tuple(context)}")
    return tuple(sorted(context))


def check_stride(stride: int) -> int:
    if isinstance(stride, bool) or not isinstance(stride, int):
        raise TypeError(f"stride must be an int, got {type(stride).__name__} {stride!r}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return stride


# From 128 input channels on, oneDNN's dilated full-rate convolution is as fast as the spliced
# GEMM; below that, and with any stride, the GEMM is faster (benchmarks/bench_time_delay.py).
_WIDE = 128


def _dilation(context: tuple[int, ...]) -> int | None:
    """The common spacing when the offsets are evenly spaced, else None."""
    if len(context) == 1:
        return 1
    gaps = {b - a for a, b in itertools.pairwise(context)}
    return gaps.pop() if len(gaps) == 1 else None


class _SplicedMatmul(torch.autograd.Function):
    """s = [W₂ | b] · [splice(y); 1]: one GEMM over the kept frames of the whole batch.

    Only the frames the output keeps are gathered, for the K offsets side by side, into a
    time-major (K·C + 1, B, T_out) buffer: K strided block copies of the input (with a stride r,
    1/r of its frames; cheap next to the GEMM, which does C_out times more work) and a row of
    ones that carries the bias. The layer is then a single GEMM (C_out × K·C+1) · (K·C+1 × B·T_out)
    — one large product, not B small ones, which matters most when a stride leaves few frames
    per sequence — written straight into a (B, C_out, T_out) output with time-major strides. The
    backward pass is the seed's local gradients as two more such GEMMs: ∂C/∂[W₂ | b] = ∂C/∂s ·
    spliceᵀ (the bias gradient is its last column) and ∂C/∂splice = W₂ᵀ · ∂C/∂s, added back onto
    the input frames with K strided adds.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, starts, stride, t_out):
        b, c, _ = x.shape
        o, k = weight.shape[0], len(starts)
        end = (t_out - 1) * stride + 1
        rows = k * c + (bias is not None)
        spliced = torch.empty(rows, b, t_out, dtype=x.dtype, device=x.device)
        x_cbt = x.transpose(0, 1)  # the copies below read contiguous rows if x is time-major
        for m, s in enumerate(starts):
            spliced[m * c:(m + 1) * c] = x_cbt[:, :, s:s + end:stride]
        w2 = weight.permute(0, 2, 1).reshape(o, k * c)  # column m·C + j: offset m, channel j
        if bias is not None:
            spliced[k * c] = 1.0
            w2 = torch.cat([w2, bias[:, None]], dim=1)
        # (B, C_out, T_out) with time-major strides: the GEMM writes it directly, and it is a
        # tensor of its own, not a view, so in-place ops on the output stay allowed.
        out = torch.empty_strided((b, o, t_out), (t_out, b * t_out, 1), dtype=x.dtype,
                                  device=x.device)
        torch.mm(w2, spliced.view(rows, b * t_out), out=out.transpose(0, 1).view(o, b * t_out))
        ctx.save_for_backward(spliced, w2)
        ctx.layout = (x.shape, starts, stride, end, bias is not None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        spliced, w2 = ctx.saved_tensors
        shape, starts, stride, end, has_bias = ctx.layout
        rows, b, t_out = spliced.shape
        k, c, o = len(starts), shape[1], w2.shape[0]
        g = grad.transpose(0, 1).reshape(o, b * t_out)  # a copy only if grad is batch-major
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gsp = torch.mm(w2[:, :k * c].T, g).view(k * c, b, t_out)
            gx = grad.new_zeros(shape)
            gx_cbt = gx.transpose(0, 1)
            for m, s in enumerate(starts):
                gx_cbt[:, :, s:s + end:stride] += gsp[m * c:(m + 1) * c]
        if ctx.needs_input_grad[1] or (has_bias and ctx.needs_input_grad[2]):
            gw2 = torch.mm(g, spliced.view(rows, b * t_out).T)
            gw = gw2[:, :k * c].view(o, k, c).permute(0, 2, 1)
            gb = gw2[:, k * c] if has_bias else None
        return gx, gw, gb, None, None, None


class TimeDelay(nn.Module):
    """A time-delay layer: the same weights at every time step (a TDNN layer).

    Args:
        in_channels: input features per frame (j in the seed's equation).
        out_channels: units (i).
        window: K, the seed's window: s_t depends on y_{t−K+1} … y_t.
        context: integer offsets instead of a window, e.g. ``(-3, 0, 3)`` or ``(-7, 2)``;
            asymmetric and sparse contexts are fine.
        stride: compute only every ``stride``-th output frame (subsampled TDNN).
        activation: ``"tanh"`` (the seed), another name, a callable, or None for linear.
        bias: learn b_i.

    Shape: input (B, C_in, T), output (B, C_out, T_out) with
    T_out = ⌊(T − span − 1) / stride⌋ + 1, span = max(context) − min(context). Strided and
    uneven (or thin, gapped) contexts return it with time-major strides: not ``is_contiguous()``.
    Output frame u is the seed's s_t at input time t = u · stride − min(context).

    Example:
        >>> layer = TimeDelay(16, 8, window=3)
        >>> layer(torch.randn(2, 16, 15)).shape
        torch.Size([2, 8, 13])
        >>> TimeDelay(40, 64, context=(-3, 0, 3), stride=3)(torch.randn(1, 40, 100)).shape
        torch.Size([1, 64, 32])
    """

    def __init__(self, in_channels: int, out_channels: int, window: int | None = None, *,
                 context: Sequence[int] | None = None, stride: int = 1,
                 activation: str | Callable | None = "tanh", bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.context = normalize_context(window, context)
        self.stride = check_stride(stride)
        self.activation = activation
        self._act = get_activation(activation)
        self.span = self.context[-1] - self.context[0]
        self._dil = _dilation(self.context)
        # One Conv1d call for a full-rate contiguous window (Conv1d parity) or a full-rate dilated
        # one on wide inputs; the spliced GEMM for strides, uneven contexts and thin gapped ones.
        self._conv = self._dil is not None and self.stride == 1 and (
            self._dil == 1 or in_channels >= _WIDE)
        factory = {"device": device, "dtype": dtype}
        k = len(self.context)
        # weight[:, :, m] multiplies the input at offset context[m] (ascending): Conv1d's layout.
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Conv1d's default initialization (uniform ±1/√fan_in), so the two compare equally."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_channels * len(self.context))
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def window(self) -> int:
        """Frames covered by the context (span + 1)."""
        return self.span + 1

    def output_length(self, length: int) -> int:
        """T_out for an input of ``length`` frames."""
        if length < self.span + 1:
            raise ValueError(self._short_msg(length))
        return (length - self.span - 1) // self.stride + 1

    def _short_msg(self, length: int) -> str:
        return (f"sequence of length {length} is shorter than the context {self.context} "
                f"(needs at least {self.span + 1} frames); pad the input or use a smaller "
                f"context")

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            name, c = type(self).__name__, self.in_channels
            raise ValueError(f"{name} expects input of shape (B, C={c}, T), got "
                             f"{tuple(x.shape)}; for one sequence use x.unsqueeze(0), "
                             f"for (B, T, C) data use x.transpose(1, 2)")
        if x.shape[2] < self.span + 1:
            raise ValueError(self._short_msg(x.shape[2]))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """s_{t,i} (before the activation), only at the computed frames."""
        self.check_input(x)
        if self._conv:
            return F.conv1d(x, self.weight, self.bias, self.stride, 0, self._dil)
        t_out = (x.shape[2] - self.span - 1) // self.stride + 1
        starts = tuple(o - self.context[0] for o in self.context)
        return _SplicedMatmul.apply(x, self.weight, self.bias, starts, self.stride, t_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pre_activation(x)
        return s if self._act is None else self._act(s)

    def extra_repr(self) -> str:
        act = self.activation if isinstance(self.activation, str) or self.activation is None \
            else getattr(self.activation, "__name__", "custom")
        return (f"{self.in_channels}, {self.out_channels}, context={self.context}, "
                f"stride={self.stride}, activation={act}, bias={self.bias is not None}")
