"""Multilayer perceptrons: a generic `MLP` and LeNet-300-100 (266,610 parameters)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..nn.time_delay import get_activation

__all__ = ["MLP", "LeNet300100"]


class MLP(nn.Module):
    """Flatten → (Linear → activation) per hidden layer → Linear.

    Args:
        in_features: inputs after flattening (e.g. 784 for 28×28 images, 40 for MNIST-1D).
        hidden: widths of the hidden layers.
        n_classes: outputs.
        activation: name or callable (``"relu"`` by default).

    Example:
        >>> MLP(40, (100, 100), 10)(torch.randn(3, 1, 40)).shape
        torch.Size([3, 10])
    """

    def __init__(self, in_features: int, hidden: Sequence[int], n_classes: int, *,
                 activation: str | Callable = "relu", device=None, dtype=None) -> None:
        super().__init__()
        f = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self._act = get_activation(activation)
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b, **f) for a, b in itertools.pairwise(widths))
        self.out = nn.Linear(widths[-1], n_classes, **f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        if h.shape[1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects {self.in_features} features per "
                             f"example after flattening, got input {tuple(x.shape)} "
                             f"({h.shape[1]} features)")
        for layer in self.hidden:
            h = layer(h)
            if self._act is not None:
                h = self._act(h)
        return self.out(h)


class LeNet300100(MLP):
    """LeNet-300-100 (LeCun et al. 1998; Han et al. 2016): 784-300-100-10, ReLU, 266,610 params.

    Example:
        >>> sum(p.numel() for p in LeNet300100().parameters())
        266610
    """

    def __init__(self, n_classes: int = 10, *, in_features: int = 784, device=None,
                 dtype=None) -> None:
        super().__init__(in_features, (300, 100), n_classes, activation="relu", device=device,
                         dtype=dtype)
