"""`TDNN`: stacks of `TimeDelay` (+ `Subsample`) layers, and their locally connected twin.

Waibel et al. 1989 (/b d g/): 16 mel coefficients × 15 frames → 8 units, window 3 → 3 units,
window 5 → each output unit summed over time. ``TDNN.waibel1989()`` builds exactly that (515
parameters). ``shared=False`` (or `TDNN.unshared_twin`) swaps every `TimeDelay` for a
`LocallyConnected1d` with the same receptive fields: same function class per position, separate
weights, a parameter count that grows with the input length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.local import LocallyConnected1d
from ..nn.subsample import Subsample
from ..nn.time_delay import TimeDelay, normalize_context

__all__ = ["TDNN", "TDNNLayer"]

_READOUTS = ("sum", "mean", "max", "flatten")


@dataclass(frozen=True)
class TDNNLayer:
    """One TDNN layer.

    Attributes:
        out_channels: units in the layer.
        window: the seed's K (give this or ``context``).
        context: integer offsets, e.g. (-3, 0, 3) (Kaldi style).
        stride: compute only every stride-th frame (subsampled TDNN, Peddinti et al. 2015).
        subsample: r of a `Subsample` layer after this one (1 = none).
        trainable_subsample: that `Subsample` learns a coefficient and bias per channel.
    """

    out_channels: int
    window: int | None = None
    context: tuple[int, ...] | None = None
    stride: int = 1
    subsample: int = 1
    trainable_subsample: bool = False


def _as_layer(spec) -> TDNNLayer:
    if isinstance(spec, TDNNLayer):
        return spec
    if isinstance(spec, dict):
        return TDNNLayer(**spec)
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        out, w = spec
        return TDNNLayer(out, context=tuple(w)) if isinstance(w, (tuple, list)) \
            else TDNNLayer(out, window=w)
    raise TypeError(f"a TDNN layer is a TDNNLayer, a dict of its fields, or (out_channels, "
                    f"window_or_context); got {spec!r}")


class TDNN(nn.Module):
    """A time-delay neural network built from layer specifications.

    Args:
        in_channels: features per input frame.
        layers: `TDNNLayer` items (or ``(out_channels, window)`` / ``(out_channels, offsets)``).
        n_classes: add a linear layer from the last layer's units to this many outputs after
            the readout; None uses the last layer's units as outputs (Waibel 1989).
        readout: how frames become one vector: ``"sum"`` over time (Waibel), ``"mean"``,
            ``"max"``, or ``"flatten"`` (needs ``input_length``; parameters then grow with T).
        activation: of every TimeDelay layer ("tanh", the seed's, by default).
        shared: False builds the locally connected twin (needs ``input_length``).
        input_length: T; required for ``shared=False`` or ``readout="flatten"``.
        pad: zero frames added at both ends of the input, so that patterns at the edges get
            full windows (a CNN's "same" padding at the input only); 0 (the default) computes
            only the frames whose whole context lies inside the sequence, as in the seed.
            ``"same"`` pads the input of every time-delay layer by its own context instead —
            ``-min(context)`` frames before, ``max(context)`` after (a negative amount crops) —
            so output frame t sits at input frame t, each layer keeps the frame count (divided
            by its stride), and context beyond the ends reads zeros; centered contexts such as
            ``(-2, -1, 0, 1, 2)`` pad both ends alike.

    Shape: input (B, in_channels, T) → output (B, n_classes or last units).

    Example:
        >>> net = TDNN.waibel1989()
        >>> net(torch.randn(4, 16, 15)).shape, sum(p.numel() for p in net.parameters())
        (torch.Size([4, 3]), 515)
        >>> twin = net.unshared_twin(input_length=15)
        >>> sum(p.numel() for p in twin.parameters())
        6203
        >>> same = TDNN(1, [TDNNLayer(8, context=(-1, 0, 1))], 2, readout="max", pad="same")
        >>> same.features(torch.randn(1, 1, 10)).shape  # every frame kept
        torch.Size([1, 8, 10])
    """

    def __init__(self, in_channels: int, layers: Sequence, n_classes: int | None = None, *,
                 readout: str = "sum", activation: str | Callable | None = "tanh",
                 shared: bool = True, input_length: int | None = None, pad: int | str = 0,
                 device=None, dtype=None) -> None:
        super().__init__()
        same = isinstance(pad, str) and pad == "same"
        if not same and (isinstance(pad, bool) or not isinstance(pad, int) or pad < 0):
            raise ValueError(f"pad must be a non-negative int (frames) or 'same', got {pad!r}")
        specs = [_as_layer(s) for s in layers]
        if not specs:
            raise ValueError("layers must hold at least one layer")
        if readout not in _READOUTS:
            raise ValueError(f"readout must be one of {_READOUTS}, got {readout!r}")
        if (not shared or readout == "flatten") and input_length is None:
            raise ValueError("shared=False and readout='flatten' fix the input length: "
                             "pass input_length=T")
        self.in_channels = in_channels
        self.specs = tuple(specs)
        self.n_classes = n_classes
        self.readout = readout
        self.activation = activation
        self.shared = shared
        self.input_length = input_length
        self.pad = pad
        factory = {"device": device, "dtype": dtype}
        blocks: list[nn.Module] = []
        ch, length = in_channels, None
        if input_length is not None:
            length = input_length if same else input_length + 2 * pad
        for i, s in enumerate(specs):
            kw = {"window": s.window, "context": s.context, "stride": s.stride,
                  "activation": activation}
            try:
                if same:
                    ctx = normalize_context(s.window, s.context)
                    frames = (-ctx[0], ctx[-1])  # T + span frames in, T out; negative crops
                    blocks.append(nn.ConstantPad1d(frames, 0.0))
                    length = None if length is None else length + sum(frames)
                if shared:
                    td = TimeDelay(ch, s.out_channels, **kw, **factory)
                    length = None if length is None else td.output_length(length)
                else:
                    td = LocallyConnected1d(ch, s.out_channels, length, **kw, **factory)
                    length = td.output_length
            except ValueError as err:
                raise ValueError(f"layer {i} ({s}): {err}") from None
            blocks.append(td)
            ch = s.out_channels
            if s.subsample > 1:
                sub = Subsample(s.subsample, trainable=s.trainable_subsample,
                                channels=ch if s.trainable_subsample else None, **factory)
                if length is not None:
                    length = sub.output_length(length)
                blocks.append(sub)
        self.body = nn.Sequential(*blocks)
        self.out_length = length
        feat = ch * length if readout == "flatten" else ch
        self.head = nn.Linear(feat, n_classes, **factory) if n_classes is not None else None

    @classmethod
    def waibel1989(cls, n_classes: int | None = None, **kwargs) -> TDNN:
        """Waibel et al. 1989: 16 × 15 input, 8 units window 3, 3 units window 5, sum over time."""
        return cls(16, [TDNNLayer(8, window=3), TDNNLayer(3, window=5)], n_classes,
                   readout="sum", **kwargs)

    def config(self) -> dict:
        return {"in_channels": self.in_channels, "layers": [asdict(s) for s in self.specs],
                "n_classes": self.n_classes, "readout": self.readout,
                "activation": self.activation, "shared": self.shared,
                "input_length": self.input_length, "pad": self.pad}

    def unshared_twin(self, input_length: int | None = None) -> TDNN:
        """The same stack with a `LocallyConnected1d` wherever this one has a `TimeDelay`."""
        length = input_length if input_length is not None else self.input_length
        p = next(self.parameters())
        return TDNN(self.in_channels, self.specs, self.n_classes, readout=self.readout,
                    activation=self.activation, shared=False, input_length=length,
                    pad=self.pad, device=p.device, dtype=p.dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_last, T_last): the last layer's units at every computed frame."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            t = "T" if self.input_length is None else f"T={self.input_length}"
            raise ValueError(f"TDNN expects input of shape (B, C={self.in_channels}, {t}), got "
                             f"{shape}; for (B, T, C) data use x.transpose(1, 2)")
        padded = isinstance(self.pad, int) and self.pad > 0  # "same" pads inside the body
        return self.body(F.pad(x, (self.pad, self.pad)) if padded else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        if self.readout == "sum":
            h = h.sum(dim=2)
        elif self.readout == "mean":
            h = h.mean(dim=2)
        elif self.readout == "max":
            h = h.amax(dim=2)
        else:
            h = h.flatten(1)
        return h if self.head is None else self.head(h)

    def extra_repr(self) -> str:
        return (f"readout={self.readout}, shared={self.shared}, "
                f"input_length={self.input_length}, pad={self.pad}")
