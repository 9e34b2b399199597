"""`Subsample`: the seed's smoothing-and-decimation layer, y_t = (1/r) Σ_{k<r} y_{rt−k}.

Only one output per r input frames is computed (the seed's "t mod r = 0"): output frame u averages
the block of input frames r·u … r·u + r − 1 (the seed's rt − k, k < r, with rt the block's last
frame). Trailing frames that do not fill a block are dropped. The trainable variant (the seed's
note; LeNet-5's S layers) replaces 1/r by a coefficient per channel and adds a bias per channel:
y_u = c_i · Σ_k y_{r·u+k} + b_i, initialized to c = 1/r (1/r² for images) and b = 0, so it
starts as the average.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .time_delay import get_activation

__all__ = ["Subsample"]


class Subsample(nn.Module):
    """Average (or trainable weighted sum) over non-overlapping blocks of ``ratio`` frames.

    Args:
        ratio: r, a positive integer (applied to every spatial axis).
        trainable: learn a coefficient and a bias per channel (needs ``channels``).
        channels: number of channels; required when ``trainable``.
        ndim: 1 for sequences (B, C, T), 2 for images (B, C, H, W).
        activation: applied after the sum (LeNet-5 squashes its S layers); None by default.

    Example:
        >>> Subsample(2)(torch.arange(6.0).view(1, 1, 6))
        tensor([[[0.5000, 2.5000, 4.5000]]])
        >>> sub = Subsample(2, trainable=True, channels=6, ndim=2)
        >>> sum(p.numel() for p in sub.parameters()), sub(torch.randn(1, 6, 28, 28)).shape
        (12, torch.Size([1, 6, 14, 14]))
    """

    def __init__(self, ratio: int = 2, *, trainable: bool = False, channels: int | None = None,
                 ndim: int = 1, activation=None, device=None, dtype=None) -> None:
        super().__init__()
        if isinstance(ratio, bool) or not isinstance(ratio, int):
            raise TypeError(f"ratio must be an integer >= 1, got {type(ratio).__name__} "
                            f"{ratio!r}; the seed subsamples by whole frames (r = 2 … 4)")
        if ratio < 1:
            raise ValueError(f"ratio must be >= 1, got {ratio}")
        if ndim not in (1, 2):
            raise ValueError(f"ndim must be 1 (B, C, T) or 2 (B, C, H, W), got {ndim!r}")
        if trainable and (channels is None or channels < 1):
            raise ValueError("a trainable Subsample learns one coefficient and one bias per "
                             "channel: pass channels=C")
        self.ratio = ratio
        self.trainable = trainable
        self.channels = channels
        self.ndim = ndim
        self.activation = activation
        self._act = get_activation(activation)
        if trainable:
            factory = {"device": device, "dtype": dtype}
            self.coefficient = nn.Parameter(torch.empty(channels, **factory))
            self.bias = nn.Parameter(torch.empty(channels, **factory))
        else:
            self.register_parameter("coefficient", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Start as the plain average: coefficient 1/r (1/r² for images), bias 0."""
        if self.trainable:
            nn.init.constant_(self.coefficient, 1.0 / self.ratio**self.ndim)
            nn.init.zeros_(self.bias)

    def output_length(self, length: int) -> int:
        if length < self.ratio:
            raise ValueError(f"input of length {length} is shorter than ratio={self.ratio}")
        return length // self.ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = self.ndim + 2
        shape = "(B, C, T)" if self.ndim == 1 else "(B, C, H, W)"
        if x.dim() != rank or (self.channels is not None and x.shape[1] != self.channels):
            ch = f"C={self.channels}" if self.channels is not None else "C"
            raise ValueError(f"Subsample(ndim={self.ndim}) expects input of shape "
                             f"{shape.replace('C', ch, 1)}, got {tuple(x.shape)}")
        if min(x.shape[2:]) < self.ratio:
            raise ValueError(f"input of size {tuple(x.shape[2:])} is shorter than "
                             f"ratio={self.ratio}: nothing to subsample; pad it or lower ratio")
        r = self.ratio
        y = F.avg_pool1d(x, r, r) if self.ndim == 1 else F.avg_pool2d(x, r, r)
        if self.trainable:
            view = (1, -1) + (1,) * self.ndim
            # mean · (r^ndim · c) = c · sum over the block
            y = y * (self.coefficient * float(r**self.ndim)).view(view) + self.bias.view(view)
        return y if self._act is None else self._act(y)

    def extra_repr(self) -> str:
        extra = f", channels={self.channels}" if self.channels is not None else ""
        act = f", activation={self.activation}" if self.activation is not None else ""
        return f"ratio={self.ratio}, trainable={self.trainable}, ndim={self.ndim}{extra}{act}"
