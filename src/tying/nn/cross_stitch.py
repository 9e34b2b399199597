"""`CrossStitch`: learned linear mixing of the activations of T task towers (Misra et al. 2016).

A cross-stitch unit sits between the same layer of T task networks and replaces each task's
activation by a learned combination of all of them:

    x̃_i = Σ_j α_ij x_j        (i, j over tasks; optionally one α matrix per channel)

α = identity keeps the towers independent, equal rows make them one shared network; training
α lets the data choose how much to share, layer by layer. Initialised with ``self_weight`` on
the diagonal and the rest of each row spread evenly (rows sum to 1; Misra et al. discuss inits
such as (0.9, 0.1) for two tasks).

>>> import torch
>>> from tying.nn import CrossStitch
>>> unit = CrossStitch(["a", "b"], self_weight=0.9)
>>> out = unit({"a": torch.ones(2, 3), "b": torch.zeros(2, 3)})
>>> [round(v, 3) for v in (out["a"][0, 0].item(), out["b"][0, 0].item())]
[0.9, 0.1]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["CrossStitch"]


class CrossStitch(nn.Module):
    """Mix T same-shaped activations with a learned T×T matrix (or one per channel).

    Args:
        tasks: the number of tasks, or their names (then errors name the task, and a mapping
            ``{task: activation}`` may be passed to `forward`, which returns one back).
        channels: None for one α matrix shared by every channel; C for one per channel of
            dimension 1 (``weight`` then has shape (C, T, T)).
        self_weight: initial α_ii in [0, 1]; the off-diagonal entries of each row start at
            (1 − self_weight) / (T − 1).

    Attributes:
        weight: α, shape (T, T) or (C, T, T); ``weight[..., i, j]`` is how much task i reads
            from task j.
        tasks: the task names (``"0"``, ``"1"``, ... when given a count).

    Example:
        >>> import torch
        >>> unit = CrossStitch(3, channels=4)
        >>> xs = [torch.randn(5, 4, 2) for _ in range(3)]
        >>> [y.shape for y in unit(xs)] == [torch.Size([5, 4, 2])] * 3
        True
        >>> unit.weight.shape
        torch.Size([4, 3, 3])
    """

    def __init__(self, tasks: int | Sequence[str], channels: int | None = None, *,
                 self_weight: float = 0.9, device=None, dtype=None) -> None:
        super().__init__()
        if isinstance(tasks, bool) or not isinstance(tasks, (int, Sequence)) or isinstance(
                tasks, str):
            raise TypeError(f"tasks must be a count or a sequence of task names, got {tasks!r}")
        names = [str(i) for i in range(tasks)] if isinstance(tasks, int) else list(tasks)
        if len(names) < 2:
            raise ValueError(f"a cross-stitch unit mixes at least 2 tasks, got {len(names)}")
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int)
                                     or channels < 1):
            raise ValueError(f"channels must be None or a positive int, got {channels!r}")
        if not 0.0 <= float(self_weight) <= 1.0:
            raise ValueError(f"self_weight must lie in [0, 1], got {self_weight}")
        self.tasks = tuple(names)
        self.channels = channels
        self.self_weight = float(self_weight)
        t = len(names)
        shape = (t, t) if channels is None else (channels, t, t)
        self.weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """α_ii = self_weight, the rest of each row (1 − self_weight) / (T − 1)."""
        t = len(self.tasks)
        with torch.no_grad():
            self.weight.fill_((1.0 - self.self_weight) / (t - 1))
            self.weight.diagonal(dim1=-2, dim2=-1).fill_(self.self_weight)

    def forward(self, xs: Sequence[torch.Tensor] | Mapping[str, torch.Tensor]
                ) -> list[torch.Tensor] | dict[str, torch.Tensor]:
        """Mix the activations: a list of T tensors (task order) or ``{task: tensor}``.

        Every activation must have the same shape (B, C, ...); ``channels`` must equal C.
        """
        as_map = isinstance(xs, Mapping)
        if as_map:
            missing = [n for n in self.tasks if n not in xs]
            extra = [n for n in xs if n not in self.tasks]
            if missing or extra:
                raise ValueError(f"CrossStitch over tasks {list(self.tasks)} got activations "
                                 f"for {list(xs)}: missing {missing}, unknown {extra}")
            seq = [xs[n] for n in self.tasks]
        else:
            seq = list(xs)
            if len(seq) != len(self.tasks):
                raise ValueError(f"CrossStitch over {len(self.tasks)} tasks got {len(seq)} "
                                 f"activations; pass one per task in the order {list(self.tasks)}")
        ref = seq[0]
        for name, x in zip(self.tasks, seq):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"task {name!r}: activation must be a tensor, got "
                                f"{type(x).__name__}")
            if x.shape != ref.shape:
                raise ValueError(f"task {name!r} has activation shape {tuple(x.shape)} but task "
                                 f"{self.tasks[0]!r} has {tuple(ref.shape)}: cross-stitched "
                                 f"towers must have the same structure at this point")
        stacked = torch.stack(seq)                                    # (T, B, C, ...)
        if self.channels is None:
            mixed = torch.einsum("ij,j...->i...", self.weight, stacked)
        else:
            if ref.dim() < 2 or ref.shape[1] != self.channels:
                raise ValueError(f"CrossStitch(channels={self.channels}) needs activations "
                                 f"(B, {self.channels}, ...), got {tuple(ref.shape)}")
            flat = stacked.flatten(3) if ref.dim() > 2 else stacked.unsqueeze(-1)  # (T,B,C,S)
            mixed = torch.einsum("cij,jbcs->ibcs", self.weight, flat).reshape(stacked.shape)
        outs = list(mixed.unbind(0))
        return dict(zip(self.tasks, outs)) if as_map else outs

    def extra_repr(self) -> str:
        return (f"tasks={list(self.tasks)}, channels={self.channels}, "
                f"self_weight={self.self_weight}")
