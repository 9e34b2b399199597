"""LeNet-5 (LeCun et al. 1998), LeNet-5-Caffe (20-50-500), and their locally connected twins.

`LeNet5` is the 1998 network: 32×32 input; C1 6@5×5; S2 trainable subsampling (a coefficient and
a bias per map); C3 16@5×5 with the paper's partial connection table (Table I); S4; C5 120@5×5;
F6 84; an output of 10 Euclidean RBF units. Squashing f(a) = 1.7159·tanh(2a/3). 60,840
trainable parameters, asserted at construction. ``shared=False`` builds the twin: every
convolution becomes a `LocallyConnected2d` with the same receptive fields (and C3's table).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.local import LocallyConnected2d, _scatter
from ..nn.subsample import Subsample
from ..nn.time_delay import get_activation

__all__ = ["C3_TABLE", "LeNet5", "LeNet5Caffe", "PartialConv2d", "RBFOutput"]


def _c3_table() -> torch.Tensor:
    """LeCun et al. 1998, Table I: which S2 maps (rows) feed which C3 maps (columns)."""
    cols = [[i % 6, (i + 1) % 6, (i + 2) % 6] for i in range(6)]            # maps 0–5: 3 adjacent
    cols += [[i % 6, (i + 1) % 6, (i + 2) % 6, (i + 3) % 6] for i in range(6)]  # 6–11: 4 adjacent
    cols += [[0, 1, 3, 4], [1, 2, 4, 5], [0, 2, 3, 5]]                       # 12–14: 4 split
    cols += [list(range(6))]                                                 # 15: all six
    table = torch.zeros(16, 6, dtype=torch.bool)  # (out map, in map)
    for o, ins in enumerate(cols):
        table[o, ins] = True
    return table


C3_TABLE = _c3_table()
"""(16, 6) bool: ``C3_TABLE[o, i]`` — C3 map o reads S2 map i (60 of 96 pairs)."""

LENET5_PARAMETERS = 60_840


class PartialConv2d(nn.Module):
    """A Conv2d in which output map o sees only the input maps ``connections[o]``.

    Only the connected kernels are parameters (LeNet-5's C3: 60 kernels + 16 biases = 1,516).

    Example:
        >>> c3 = PartialConv2d(6, 16, 5, C3_TABLE)
        >>> sum(p.numel() for p in c3.parameters())
        1516
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 connections: torch.Tensor, *, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        conn = torch.as_tensor(connections, dtype=torch.bool)
        if conn.shape != (out_channels, in_channels):
            raise ValueError(f"connections must have shape (out_channels={out_channels}, "
                             f"in_channels={in_channels}), got {tuple(conn.shape)}")
        oi, ii = conn.nonzero(as_tuple=True)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, \
            kernel_size
        self.register_buffer("connections", conn, persistent=False)
        self.register_buffer("_out_idx", oi, persistent=False)
        self.register_buffer("_in_idx", ii, persistent=False)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(len(oi), kernel_size, kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = (self.connections.sum(dim=1) * self.kernel_size**2).double()
        bound = fan_in.rsqrt()
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0).mul_(bound[self._out_idx].view(-1, 1, 1)
                                                 .to(self.weight))
            if self.bias is not None:
                self.bias.uniform_(-1.0, 1.0).mul_(bound.to(self.bias))

    def full_weight(self) -> torch.Tensor:
        k = self.kernel_size
        full = self.weight.new_zeros(1, self.out_channels, self.in_channels, k, k)
        return _scatter(full, self._out_idx, self._in_idx, self.weight.unsqueeze(0))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.full_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"connections={int(self.connections.sum())}/{self.connections.numel()}")


class RBFOutput(nn.Module):
    """LeNet-5's output: y_i = Σ_j (x_j − w_ij)²; returns −y as logits (84·10 = 840 weights)."""

    def __init__(self, in_features: int, n_classes: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.empty(n_classes, in_features, device=device,
                                                dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The paper drew ±1 bitmaps; random ±1 centers keep the classes far apart.
        with torch.no_grad():
            self.centers.copy_(torch.randint(0, 2, self.centers.shape).to(self.centers) * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x.unsqueeze(1) - self.centers) ** 2).sum(dim=-1)


def _check_image(model: str, x, channels: int, size: int, how: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} takes a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != channels or tuple(x.shape[2:]) != (size, size):
        raise ValueError(f"{model} wants images of shape (B, {channels}, {size}, {size}), got "
                         f"{tuple(x.shape)}. {how}")


class LeNet5(nn.Module):
    """LeNet-5 as in LeCun et al. 1998 (60,840 parameters), or its locally connected twin.

    Args:
        n_classes: RBF output units (10).
        in_channels: input maps (1).
        shared: False swaps C1, C3 and C5 for `LocallyConnected2d` layers with the same
            receptive fields and C3 table (C5 sees a single 5×5 position, so it is unchanged).
        output: ``"rbf"`` (the paper's Euclidean RBF units, 840 weights) or ``"linear"``.

    Example:
        >>> net = LeNet5()
        >>> net(torch.zeros(2, 1, 32, 32)).shape, sum(p.numel() for p in net.parameters())
        (torch.Size([2, 10]), 60840)
    """

    def __init__(self, n_classes: int = 10, *, in_channels: int = 1, shared: bool = True,
                 output: str = "rbf", device=None, dtype=None) -> None:
        super().__init__()
        if output not in ("rbf", "linear"):
            raise ValueError(f"output must be 'rbf' or 'linear', got {output!r}")
        f = {"device": device, "dtype": dtype}
        self.in_channels, self.shared, self.output = in_channels, shared, output
        self.n_classes = n_classes
        self.act = get_activation("lecun_tanh")
        sq = "lecun_tanh"
        if shared:
            self.c1 = nn.Conv2d(in_channels, 6, 5, **f)
            self.c3 = PartialConv2d(6, 16, 5, C3_TABLE, **f)
            self.c5 = nn.Conv2d(16, 120, 5, **f)
        else:
            self.c1 = LocallyConnected2d(in_channels, 6, 32, 5, **f)
            self.c3 = LocallyConnected2d(6, 16, 14, 5, connections=C3_TABLE, **f)
            self.c5 = LocallyConnected2d(16, 120, 5, 5, **f)
        self.s2 = Subsample(2, trainable=True, channels=6, ndim=2, activation=sq, **f)
        self.s4 = Subsample(2, trainable=True, channels=16, ndim=2, activation=sq, **f)
        self.f6 = nn.Linear(120, 84, **f)
        self.out = RBFOutput(84, n_classes, **f) if output == "rbf" else \
            nn.Linear(84, n_classes, **f)
        n = sum(p.numel() for p in self.parameters())
        if shared and output == "rbf" and n_classes == 10 and in_channels == 1 and \
                n != LENET5_PARAMETERS:
            raise RuntimeError(f"LeNet5 has {n} parameters, not the paper's {LENET5_PARAMETERS}")

    def unshared_twin(self) -> LeNet5:
        """A freshly initialized locally connected twin with the same options."""
        p = next(self.parameters())
        return LeNet5(self.n_classes, in_channels=self.in_channels, shared=False,
                      output=self.output, device=p.device, dtype=p.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image("LeNet5", x, self.in_channels, 32,
                     "Pad 28×28 images by 2 pixels per side: torch.nn.functional.pad(x, "
                     "(2, 2, 2, 2)), or load them padded with load_fashion_mnist(size=32) / "
                     "load_digits(size=32).")
        h = self.s2(self.act(self.c1(x)))   # (B, 6, 14, 14)
        h = self.s4(self.act(self.c3(h)))   # (B, 16, 5, 5)
        h = self.act(self.c5(h)).flatten(1)  # (B, 120)
        h = self.act(self.f6(h))            # (B, 84)
        return self.out(h)


class LeNet5Caffe(nn.Module):
    """Caffe's LeNet (the "LeNet-5-Caffe" of the compression papers): 20-50-500, 431,080 params.

    conv 20@5×5 → max-pool 2 → conv 50@5×5 → max-pool 2 → fc 500 → ReLU → fc n_classes, on
    28×28 input. ``shared=False`` swaps both convolutions for `LocallyConnected2d`.

    Example:
        >>> net = LeNet5Caffe()
        >>> net(torch.zeros(2, 1, 28, 28)).shape, sum(p.numel() for p in net.parameters())
        (torch.Size([2, 10]), 431080)
    """

    def __init__(self, n_classes: int = 10, *, in_channels: int = 1, input_size: int = 28,
                 shared: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if input_size < 16:
            raise ValueError(f"input_size must be >= 16 for two 5×5 convolutions and two "
                             f"poolings, got {input_size}")
        f = {"device": device, "dtype": dtype}
        self.in_channels, self.input_size, self.shared = in_channels, input_size, shared
        self.n_classes = n_classes
        s1 = (input_size - 4) // 2
        s2 = (s1 - 4) // 2
        if shared:
            self.conv1 = nn.Conv2d(in_channels, 20, 5, **f)
            self.conv2 = nn.Conv2d(20, 50, 5, **f)
        else:
            self.conv1 = LocallyConnected2d(in_channels, 20, input_size, 5, **f)
            self.conv2 = LocallyConnected2d(20, 50, s1, 5, **f)
        self.fc1 = nn.Linear(50 * s2 * s2, 500, **f)
        self.fc2 = nn.Linear(500, n_classes, **f)

    def unshared_twin(self) -> LeNet5Caffe:
        p = next(self.parameters())
        return LeNet5Caffe(self.n_classes, in_channels=self.in_channels,
                           input_size=self.input_size, shared=False, device=p.device,
                           dtype=p.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.input_size
        _check_image("LeNet5Caffe", x, self.in_channels, n,
                     f"Resize or pad the images to {n}×{n} (F.pad), or build "
                     f"LeNet5Caffe(input_size={x.shape[-1] if x.dim() == 4 else 'N'}).")
        h = F.max_pool2d(self.conv1(x), 2)
        h = F.max_pool2d(self.conv2(h), 2)
        return self.fc2(F.relu(self.fc1(h.flatten(1))))
