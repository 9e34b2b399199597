"""A small multi-task training loop: per-task losses, equal or uncertainty weighting, any device.

The loop is deliberately thin, so that it can be replaced: each step draws one batch per task,
computes ``loss_t = losses[t](model(x_t, task=t), y_t)``, combines the task losses with a
weighting, adds an optional soft-tie penalty, and takes one optimizer step. Everything it uses
is public: `check_tasks` (the name checks), `EqualWeighting` / `UncertaintyWeighting` (the
combination), `evaluate_multitask` (per-task accuracy). A model is anything called as
``model(x, task=name)``; the `tying.models` multi-task networks are.

Weightings (LibMTL's names: EW, UW):

- ``equal``: Σ_t L_t.
- ``uncertainty`` (Kendall, Gal & Cipolla 2018): Σ_t ½·exp(−s_t)·L_t + ½·s_t with a learned
  s_t = log σ_t² per task; a task whose loss stays high gets down-weighted, and the ½·s_t term
  stops σ from growing without bound.

The device is the model's (its first parameter's), or ``device=``; batches are moved there one at
a time, so the data may stay on the CPU.

>>> import torch
>>> from torch import nn
>>> from tying.models import HardSharedTrunk
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(64, 4, generator=g)
>>> data = {"sign": (x, (x[:, 0] > 0).long()), "big": (x, (x[:, 1] > 0).long())}
>>> _ = torch.manual_seed(0)
>>> net = HardSharedTrunk(nn.Sequential(nn.Linear(4, 16), nn.ReLU()),
...                       {"sign": nn.Linear(16, 2), "big": nn.Linear(16, 2)})
>>> history = train_multitask(net, data, steps=150, lr=1e-2, generator=g)
>>> sorted(history.losses), len(history.total)
(['big', 'sign'], 150)
>>> all(acc > 0.9 for acc in evaluate_multitask(net, data).values())
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EqualWeighting", "MultiTaskHistory", "UncertaintyWeighting", "check_tasks",
           "evaluate_multitask", "make_weighting", "train_multitask"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
WEIGHTINGS = ("equal", "uncertainty")


def _names(obj, what: str) -> list[str]:
    if not isinstance(obj, Mapping):
        raise TypeError(f"{what} must be a mapping {{task name: ...}}, got {type(obj).__name__}")
    return list(obj)


def _model_tasks(model: nn.Module) -> list[str] | None:
    tasks = getattr(model, "tasks", None)
    return list(tasks) if tasks is not None else None


def check_tasks(model: nn.Module | Sequence[str], data: Mapping, *,
                losses: Mapping | None = None, weighting: nn.Module | None = None) -> list[str]:
    """Check that the model, the data, the losses and the weighting name the same tasks.

    Returns the task names in the model's order (the data's when the model has no ``tasks``).

    Raises:
        ValueError: naming every task that is in one place but not another, a task with no
            examples, or inputs and labels of different lengths.
        TypeError: data that is not ``{task: (inputs, labels)}``.

    Example:
        >>> from tying.models import TaskTowers
        >>> from torch import nn
        >>> net = TaskTowers(lambda: nn.Linear(2, 2), tasks=["a", "b"])
        >>> check_tasks(net, {"a": (torch.zeros(3, 2), torch.zeros(3))})
        Traceback (most recent call last):
        ...
        ValueError: the model has a head for task 'b' but data has no entry for it; pass \
data['b'] = (inputs, labels) or remove the task from the model
    """
    tasks = list(model) if isinstance(model, Sequence) and not isinstance(model, str) else \
        _model_tasks(model)
    data_tasks = _names(data, "data")
    if not data_tasks:
        raise ValueError("data is empty: give {task: (inputs, labels)} for at least one task")
    if tasks is None:
        tasks = data_tasks
    for t in tasks:
        if t not in data:
            raise ValueError(f"the model has a head for task {t!r} but data has no entry for "
                             f"it; pass data[{t!r}] = (inputs, labels) or remove the task from "
                             f"the model")
    for t in data_tasks:
        if t not in tasks:
            raise ValueError(f"data has task {t!r} but the model has no head for it (model "
                             f"tasks: {tasks}); check the spelling or add a head")
    for t in tasks:
        x, y = _xy(data[t], t)
        if len(x) == 0:
            raise ValueError(f"task {t!r} has no data (0 examples); the model has a head for "
                             f"it that could not be trained: give it examples or remove it")
        if len(x) != len(y):
            raise ValueError(f"task {t!r}: {len(x)} inputs but {len(y)} labels")
    for what, mapping in (("losses", losses),):
        if mapping is None:
            continue
        names = _names(mapping, what)
        extra = [t for t in names if t not in tasks]
        missing = [t for t in tasks if t not in names]
        if extra or missing:
            which = (f"task {missing[0]!r} has no loss" if missing
                     else f"a loss is given for task {extra[0]!r}, which the model does not have")
            raise ValueError(f"{what} and the model's tasks do not match: {which} (model tasks: "
                             f"{tasks}; {what}: {names})")
    if weighting is not None and getattr(weighting, "tasks", None) is not None:
        wt = list(weighting.tasks)
        if wt != tasks:
            only_w = [t for t in wt if t not in tasks]
            only_m = [t for t in tasks if t not in wt]
            why = "; ".join([*(f"task {t!r} is not a task of the model" for t in only_w),
                             *(f"task {t!r} has no weight" for t in only_m)])
            raise ValueError(f"the weighting's tasks {wt} do not match the model's {tasks} ("
                             f"{why or 'same names, different order'})")
    return tasks


def _xy(item, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(item, "x_train") and hasattr(item, "y_train"):   # a tying.data.Split
        return item.x_train, item.y_train
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise TypeError(f"data[{task!r}] must be (inputs, labels) or a tying.data.Split, got "
                        f"{type(item).__name__}")
    x, y = item
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"data[{task!r}] must hold tensors, got ({type(x).__name__}, "
                        f"{type(y).__name__})")
    return x, y


class EqualWeighting(nn.Module):
    """Σ_t L_t (LibMTL's EW). Has no parameters.

    Example:
        >>> EqualWeighting()({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}).item()
        3.0
    """

    tasks = None

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(losses.values())).sum()

    def weights(self) -> dict[str, float]:
        return {}


class UncertaintyWeighting(nn.Module):
    """Σ_t ½·exp(−s_t)·L_t + ½·s_t with learned s_t = log σ_t² (Kendall et al. 2018).

    Its parameter ``log_vars`` (one per task, initialised to ``init``) must be optimised with
    the model (`train_multitask` does this).

    Args:
        tasks: the task names (in the model's order).
        init: the initial s_t (0: every task weighted ½).

    Example:
        >>> w = UncertaintyWeighting(["a", "b"])
        >>> w({"a": torch.tensor(2.0), "b": torch.tensor(4.0)}).item()    # ½·2 + ½·4
        3.0
        >>> w.weights()
        {'a': 0.5, 'b': 0.5}
    """

    def __init__(self, tasks: Sequence[str], *, init: float = 0.0, device=None,
                 dtype=None) -> None:
        super().__init__()
        tasks = list(tasks)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be a non-empty list of distinct names, got {tasks}")
        self.tasks = tuple(tasks)
        self.log_vars = nn.Parameter(torch.full((len(tasks),), float(init), device=device,
                                                dtype=dtype))

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if list(losses) != list(self.tasks):
            raise ValueError(f"UncertaintyWeighting over {list(self.tasks)} got losses for "
                             f"{list(losses)}")
        stacked = torch.stack([losses[t] for t in self.tasks]).to(self.log_vars.dtype)
        return (0.5 * torch.exp(-self.log_vars) * stacked + 0.5 * self.log_vars).sum()

    @torch.no_grad()
    def weights(self) -> dict[str, float]:
        """The current weight ½·exp(−s_t) of each task's loss."""
        return {t: float(0.5 * torch.exp(-s)) for t, s in zip(self.tasks, self.log_vars)}


def make_weighting(weighting: str | nn.Module, tasks: Sequence[str], *,
                   device=None) -> nn.Module:
    """``"equal"`` / ``"uncertainty"`` → a weighting module; a module is returned as it is."""
    if isinstance(weighting, nn.Module):
        return weighting
    if weighting == "equal":
        return EqualWeighting()
    if weighting == "uncertainty":
        return UncertaintyWeighting(tasks, device=device)
    raise ValueError(f"weighting must be one of {WEIGHTINGS} or an nn.Module taking "
                     f"{{task: loss}}, got {weighting!r}")


@dataclass
class MultiTaskHistory:
    """What `train_multitask` recorded, one entry per step.

    Attributes:
        losses: task → its (unweighted) loss per step.
        total: the optimised loss per step (weighted sum + penalty).
        penalty: the soft-tie penalty per step (empty without one).
        weights: task → its loss weight per step (uncertainty weighting only).
    """

    losses: dict[str, list[float]] = field(default_factory=dict)
    total: list[float] = field(default_factory=list)
    penalty: list[float] = field(default_factory=list)
    weights: dict[str, list[float]] = field(default_factory=dict)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def train_multitask(model: nn.Module, data: Mapping, *, steps: int,
                    losses: Mapping[str, LossFn] | LossFn | None = None,
                    weighting: str | nn.Module = "equal", penalty=None,
                    optimizer: torch.optim.Optimizer | None = None, lr: float = 1e-3,
                    batch_size: int = 64, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None,
                    on_step: Callable[[int, dict[str, float]], None] | None = None
                    ) -> MultiTaskHistory:
    """Train ``model`` on every task at once: one batch per task per step.

    Args:
        model: called as ``model(x, task=name)``; its ``tasks`` (if it has them) must match
            the data's.
        data: ``{task: (inputs, labels)}`` (tensors, or a `tying.data.Split`: its training
            part); tasks may have different inputs and different numbers of examples.
        steps: optimizer steps.
        losses: one loss function for every task, or ``{task: loss_fn}``; default
            cross-entropy.
        weighting: ``"equal"``, ``"uncertainty"`` or a module ``{task: loss} -> loss``
            (`EqualWeighting`, `UncertaintyWeighting`, or your own).
        penalty: a callable returning a scalar to add (a `tying.SoftTie`; its ``step()`` is
            called after every optimizer step).
        optimizer: default Adam(lr) over the model's and the weighting's parameters (shared
            parameters once). A given optimizer must hold the weighting's parameters too.
        batch_size: examples per task per step (all of a task's examples if it has fewer).
        generator: the source of the batch indices (CPU generator).
        device: where to compute; default the model's device.
        on_step: ``on_step(step, {task: loss})`` after every step (logging, early stops).

    Returns:
        The `MultiTaskHistory`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else _device_of(model)
    loss_map = losses if isinstance(losses, Mapping) else None
    tasks = check_tasks(model, data, losses=loss_map)
    if losses is None:
        loss_map = dict.fromkeys(tasks, F.cross_entropy)
    elif loss_map is None:
        if not callable(losses):
            raise TypeError(f"losses must be a callable or {{task: callable}}, got "
                            f"{type(losses).__name__}")
        loss_map = dict.fromkeys(tasks, losses)
    weigh = make_weighting(weighting, tasks, device=dev).to(dev)
    check_tasks(tasks, data, weighting=weigh)
    seen: set[int] = set()
    params = []
    for p in [*model.parameters(), *weigh.parameters()]:
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            params.append(p)
    if optimizer is None:
        optimizer = torch.optim.Adam(params, lr=lr)
    else:
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        lost = [n for n, p in weigh.named_parameters() if id(p) not in held]
        if lost:
            raise ValueError(f"the optimizer does not hold the weighting's parameters {lost}; "
                             f"build it over [*model.parameters(), *weighting.parameters()] and "
                             f"pass that weighting module as weighting=")
    xy = {t: _xy(data[t], t) for t in tasks}
    history = MultiTaskHistory(losses={t: [] for t in tasks})
    if isinstance(weigh, UncertaintyWeighting):
        history.weights = {t: [] for t in tasks}
    model.train()
    for step in range(steps):
        task_losses = {}
        for t in tasks:
            x, y = xy[t]
            if len(x) > batch_size:
                idx = torch.randint(0, len(x), (batch_size,), generator=generator)
                x, y = x[idx], y[idx]
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            task_losses[t] = loss_map[t](model(x, task=t), y)
        total = weigh(task_losses)
        pen = None
        if penalty is not None:
            pen = penalty()
            total = total + pen
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if penalty is not None and hasattr(penalty, "step"):
            penalty.step()
        values = {t: float(v.detach()) for t, v in task_losses.items()}
        for t, v in values.items():
            history.losses[t].append(v)
        history.total.append(float(total.detach()))
        if pen is not None:
            history.penalty.append(float(pen.detach()))
        if history.weights:
            for t, w in weigh.weights().items():
                history.weights[t].append(w)
        if on_step is not None:
            on_step(step, values)
    return history


@torch.no_grad()
def evaluate_multitask(model: nn.Module, data: Mapping, *, batch_size: int = 1024,
                       device: torch.device | str | None = None) -> dict[str, float]:
    """Accuracy (argmax of the output) per task on ``{task: (inputs, labels)}``.

    A `tying.data.Split` in ``data`` is evaluated on its test part. The model is put in eval
    mode and back in the mode it had.
    """
    dev = torch.device(device) if device is not None else _device_of(model)
    pairs = {t: ((v.x_test, v.y_test) if hasattr(v, "x_test") else v) for t, v in
             _items(data)}
    tasks = check_tasks(model, pairs)
    was_training = model.training
    model.eval()
    out = {}
    try:
        for t in tasks:
            x, y = _xy(pairs[t], t)
            correct = 0
            for i in range(0, len(x), batch_size):
                xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
                correct += int((model(xb, task=t).argmax(-1) == yb).sum())
            out[t] = correct / len(x)
    finally:
        model.train(was_training)
    return out


def _items(data):
    _names(data, "data")
    return data.items()
