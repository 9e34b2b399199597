"""Multi-task networks: a hard-shared trunk, soft-tied towers, cross-stitched towers.

All three hold one network per task in ``towers`` (a `nn.ModuleDict`, task name → tower), so
the same training loop (`tying.multitask.train_multitask`), `tying.footprint`, `tying.save` /
`tying.load` and `tying.verify` work on each of them:

- `HardSharedTrunk`: tower = trunk + head; every task's trunk is the *same* parameters, made so
  with `tying.share` (recorded: ``verify`` checks it, ``footprint`` counts the trunk once as
  unique and T times as virtual, ``save`` stores it once).
- `TaskTowers`: independent towers (single-task training), which `TaskTowers.soft_tie` pulls
  together with a `tying.SoftTie` penalty (star or all-pairs, any norm; Duong et al. 2015).
- `CrossStitchNet`: towers cut into stages, with a `tying.nn.CrossStitch` unit after every stage
  but the last (Misra et al. 2016).

``model(x)`` returns ``{task: output}`` for one input batch; ``model(x, task=name)`` returns one
task's output (and for hard sharing and independent towers runs only that task's tower).

>>> import torch, tying
>>> from torch import nn
>>> net = HardSharedTrunk(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU()),
...                       {"digit": nn.Linear(32, 10), "parity": nn.Linear(32, 2)})
>>> {k: tuple(v.shape) for k, v in net(torch.randn(4, 1, 8, 8)).items()}
{'digit': (4, 10), 'parity': (4, 2)}
>>> fp = tying.footprint(net)
>>> fp.unique_params, fp.virtual_params        # trunk 2,080 once (+ heads 330+66) vs twice
(2476, 4556)
>>> len(tying.verify(net))                    # the trunk's weight and bias, checked
2
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ..hard import share
from ..nn.cross_stitch import CrossStitch
from ..soft import SoftTie

__all__ = ["CrossStitchNet", "HardSharedTrunk", "MultiTaskNet", "TaskTowers",
           "check_same_structure"]


def _task_names(mapping, what: str) -> list[str]:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{what} must be a mapping {{task name: module}}, got "
                        f"{type(mapping).__name__}")
    if not mapping:
        raise ValueError(f"{what} is empty: give at least one task")
    for name, mod in mapping.items():
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{what}: task names must be non-empty strings without '.', got "
                             f"{name!r}")
        if not isinstance(mod, nn.Module):
            raise TypeError(f"{what}[{name!r}] must be an nn.Module, got {type(mod).__name__}")
    return list(mapping)


def check_same_structure(towers: Mapping[str, nn.Module], why: str) -> None:
    """Raise ValueError naming the task whose tower differs from the first task's.

    Compared: parameter names, shapes and dtypes (what soft ties and cross-stitch pair up).

    Example:
        >>> from torch import nn
        >>> check_same_structure({"a": nn.Linear(2, 3), "b": nn.Linear(2, 4)}, "soft ties")
        Traceback (most recent call last):
        ...
        ValueError: soft ties need towers of the same structure: task 'b' differs from task 'a' \
in 'weight': shape (4, 2) vs (3, 2), 'bias': shape (4,) vs (3,)
    """
    names = list(towers)
    first = names[0]
    ref = {n: (tuple(p.shape), p.dtype) for n, p in towers[first].named_parameters()}
    for task in names[1:]:
        got = {n: (tuple(p.shape), p.dtype) for n, p in towers[task].named_parameters()}
        if list(got) != list(ref):
            raise ValueError(
                f"{why} need towers of the same structure: task {task!r} has parameters only in "
                f"it {sorted(set(got) - set(ref))[:5]} and lacks {sorted(set(ref) - set(got))[:5]}"
                f" of task {first!r}; build every tower with the same constructor")
        diffs = []
        for n, (shape, dtype) in got.items():
            if (shape, dtype) != ref[n]:
                what = (f"shape {shape} vs {ref[n][0]}" if shape != ref[n][0]
                        else f"dtype {dtype} vs {ref[n][1]}")
                diffs.append(f"{n!r}: {what}")
        if diffs:
            raise ValueError(f"{why} need towers of the same structure: task {task!r} differs "
                             f"from task {first!r} in {', '.join(diffs[:5])}")


class MultiTaskNet(nn.Module):
    """Base class: ``towers`` maps each task to its network; ``forward`` routes by task.

    Subclasses fill ``self.towers`` (an `nn.ModuleDict`). ``tasks`` lists the task names in
    order.
    """

    towers: nn.ModuleDict

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.towers.keys())

    def _check_task(self, task: str) -> None:
        if task not in self.towers:
            raise ValueError(f"{type(self).__name__} has no task {task!r}; its tasks are "
                             f"{list(self.towers)}")

    def forward(self, x: torch.Tensor, task: str | None = None):
        """``{task: tower(x)}`` for every task, or one tower's output when ``task`` is given."""
        if task is not None:
            self._check_task(task)
            return self.towers[task](x)
        return {t: tower(x) for t, tower in self.towers.items()}


class HardSharedTrunk(MultiTaskNet):
    """Hard parameter sharing: one trunk for all tasks, one head per task.

    Each task's tower is ``nn.Sequential(trunk, head)`` (``towers[task].0`` is the trunk,
    ``towers[task].1`` the head). The trunks are copies of ``trunk`` made one set with
    `tying.share` (the first task's trunk is the source), so tying's tools see the sharing:
    `tying.footprint` reports the trunk once as unique and once per task as virtual,
    `tying.save` stores it once, `tying.verify` raises if something broke the tie.

    Args:
        trunk: the shared part (its parameters become the first task's trunk).
        heads: ``{task: head}``; a head may have any structure (e.g. a different number of
            outputs per task).

    Example:
        >>> from torch import nn
        >>> net = HardSharedTrunk(nn.Linear(8, 4), {"a": nn.Linear(4, 3), "b": nn.Linear(4, 1)})
        >>> net.trunk_of("a").weight is net.trunk_of("b").weight
        True
    """

    def __init__(self, trunk: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not isinstance(trunk, nn.Module):
            raise TypeError(f"trunk must be an nn.Module, got {type(trunk).__name__}")
        names = _task_names(heads, "heads")
        towers = {}
        for i, task in enumerate(names):
            t = trunk if i == 0 else copy.deepcopy(trunk)
            towers[task] = nn.Sequential(t, heads[task])
        self.towers = nn.ModuleDict(towers)
        if len(names) > 1:
            share(self.towers[names[0]][0], *(self.towers[t][0] for t in names[1:]))

    def trunk_of(self, task: str) -> nn.Module:
        self._check_task(task)
        return self.towers[task][0]

    def head_of(self, task: str) -> nn.Module:
        self._check_task(task)
        return self.towers[task][1]

    def forward(self, x: torch.Tensor, task: str | None = None):
        """All tasks: the trunk runs once, then every head; one task: that tower."""
        if task is not None:
            return super().forward(x, task)
        h = self.trunk_of(self.tasks[0])(x)
        return {t: tower[1](h) for t, tower in self.towers.items()}


class TaskTowers(MultiTaskNet):
    """One independent tower per task: single-task training, or soft sharing via `soft_tie`.

    Args:
        towers: ``{task: module}``, or a constructor ``make() -> module`` with ``tasks=``.
        tasks: task names when ``towers`` is a constructor.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = TaskTowers(lambda: nn.Linear(3, 2), tasks=["a", "b", "c"])
        >>> penalty = net.soft_tie(strength=0.1, topology="star")
        >>> penalty().item() > 0                       # towers start different
        True
    """

    def __init__(self, towers: Mapping[str, nn.Module] | Callable[[], nn.Module], *,
                 tasks: Sequence[str] | None = None) -> None:
        super().__init__()
        if callable(towers) and not isinstance(towers, (Mapping, nn.Module)):
            if tasks is None:
                raise ValueError("TaskTowers(make, tasks=[...]): a constructor needs tasks=")
            towers = {t: towers() for t in tasks}
        elif tasks is not None:
            raise ValueError("tasks= is only used with a constructor; a mapping names its tasks")
        _task_names(towers, "towers")
        self.towers = nn.ModuleDict(dict(towers))

    def soft_tie(self, *, include: str | Sequence[str] | None = None,
                 exclude: str | Sequence[str] | None = None, norm: str = "l2sq",
                 strength: float | Mapping[str, float] = 1e-3, topology: str = "star",
                 reduction: str = "sum", **kwargs) -> SoftTie:
        """A `tying.SoftTie` between the towers (task order): add ``penalty()`` to the loss.

        Args:
            include, exclude: globs over a tower's parameter names (e.g. ``exclude="2.*"`` to
                leave a per-task output layer free).
            norm, strength, reduction: as in `tying.SoftTie.between`.
            topology: ``star`` (each tower to the mean of all: T pairs) or ``all_pairs``
                (T(T−1)/2 pairs); ``chain``, and ``pair`` for exactly two tasks.
            **kwargs: any other argument of `tying.SoftTie.between` (schedule=, ...).

        Raises:
            ValueError: naming the task whose tower has a different structure, when the tied
                parameters differ (names or shapes).
        """
        towers = dict(self.towers.items())
        if len(towers) < 2:
            raise ValueError(f"soft sharing needs at least 2 tasks, got {list(towers)}")
        if include is None and exclude is None:
            check_same_structure(towers, "soft ties")
        else:
            picked = {}
            for t, m in towers.items():   # compare only what is tied
                try:   # SoftTie's own selection, applied to one tower at a time
                    picked[t] = SoftTie.between(m, m, include=include, exclude=exclude).groups
                except ValueError as e:
                    raise ValueError(f"soft ties: the tower of task {t!r}: {e}") from None
            first = self.tasks[0]
            ref = [(g.name, g.shape) for g in picked[first]]
            for t in self.tasks[1:]:
                got = [(g.name, g.shape) for g in picked[t]]
                if got != ref:
                    raise ValueError(f"soft ties need towers of the same structure: task {t!r} "
                                     f"selects {got[:4]} but task {first!r} selects {ref[:4]}")
        return SoftTie.between(*towers.values(), include=include, exclude=exclude, norm=norm,
                               strength=strength, topology=topology, reduction=reduction,
                               **kwargs)


class CrossStitchNet(MultiTaskNet):
    """Towers cut into stages with a `tying.nn.CrossStitch` unit after every stage but the last.

    ``towers[task]`` is an `nn.Sequential` of the stages (``towers[task][k]`` is stage k);
    ``stitches[k]`` mixes the outputs of stage k of every tower. All towers must have the same
    structure up to the last stage (so that stage k of every task produces activations of one
    shape); the last stage (the head) is not stitched and may differ per task. Misra et al.
    2016 put the units after pooling layers of two AlexNets; any staging works.

    Args:
        towers: ``{task: sequence of stages}`` (an `nn.Sequential`, list or ModuleList).
        channels: None (one α matrix per unit) or, per unit, the channel count of dimension 1
            of that stage's output (one α matrix per channel).
        self_weight: initial α_ii (see `tying.nn.CrossStitch`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> make = lambda: nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.ReLU()),
        ...                              nn.Linear(8, 2))
        >>> net = CrossStitchNet({"a": make(), "b": make()}, channels=[8])
        >>> net(torch.randn(5, 4), task="b").shape
        torch.Size([5, 2])
        >>> len(net.stitches), tuple(net.stitches[0].weight.shape)
        (1, (8, 2, 2))
    """

    def __init__(self, towers: Mapping[str, Sequence[nn.Module] | nn.Sequential], *,
                 channels: Sequence[int | None] | None = None, self_weight: float = 0.9) -> None:
        super().__init__()
        if not isinstance(towers, Mapping):
            raise TypeError(f"towers must be a mapping {{task: stages}}, got "
                            f"{type(towers).__name__}")
        seqs = {}
        for t, stages in towers.items():
            if isinstance(stages, nn.Sequential):
                seqs[t] = stages
            elif isinstance(stages, (list, tuple, nn.ModuleList)):
                seqs[t] = nn.Sequential(*stages)
            else:
                raise TypeError(f"towers[{t!r}] must be an nn.Sequential or a list of stages, "
                                f"got {type(stages).__name__}")
        names = _task_names(seqs, "towers")
        if len(names) < 2:
            raise ValueError(f"cross-stitch needs at least 2 tasks, got {names}")
        n_stages = len(seqs[names[0]])
        for t in names[1:]:
            if len(seqs[t]) != n_stages:
                raise ValueError(f"cross-stitch needs towers of the same structure: task {t!r} "
                                 f"has {len(seqs[t])} stages, task {names[0]!r} has {n_stages}")
        if n_stages < 2:
            raise ValueError(f"cross-stitch needs towers of at least 2 stages (a unit goes "
                             f"between stages), got {n_stages}")
        # the stitched stages must match; the heads may differ (outputs per task)
        check_same_structure({t: s[:-1] for t, s in seqs.items()}, "cross-stitch")
        n_units = n_stages - 1
        if channels is None:
            channels = [None] * n_units
        channels = list(channels)
        if len(channels) != n_units:
            raise ValueError(f"channels must give one entry per unit ({n_units}: after every "
                             f"stage but the last), got {len(channels)}")
        self.towers = nn.ModuleDict(seqs)
        self.stitches = nn.ModuleList(CrossStitch(names, c, self_weight=self_weight)
                                      for c in channels)

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor], task: str | None = None):
        """Run every tower (stitched), return ``{task: output}`` or the one asked for.

        ``x`` is one batch fed to every tower, or ``{task: batch}`` (same batch size).
        """
        if task is not None:
            self._check_task(task)
        if isinstance(x, Mapping):
            missing = [t for t in self.tasks if t not in x]
            if missing or len(x) != len(self.tasks):
                raise ValueError(f"CrossStitchNet needs an input for every task {list(self.tasks)}"
                                 f", got {list(x)} (missing {missing})")
            h = {t: x[t] for t in self.tasks}
        else:
            h = dict.fromkeys(self.tasks, x)
        for k, unit in enumerate(self.stitches):
            h = unit({t: self.towers[t][k](h[t]) for t in self.tasks})
        last = len(self.stitches)
        if task is not None:
            return self.towers[task][last](h[task])
        return {t: self.towers[t][last](h[t]) for t in self.tasks}
