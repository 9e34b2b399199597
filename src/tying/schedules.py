"""Strength schedules for penalties: a multiplier of the step, from 0 up to 1 and back.

A schedule is any callable ``step -> float``; `SoftTie` multiplies every group's strength by it.

>>> s = LinearWarmup(steps=10)
>>> [round(s(t), 2) for t in (0, 5, 10, 20)]
[0.0, 0.5, 1.0, 1.0]
>>> c = Cosine(steps=100, final=0.1)
>>> round(c(0), 3), round(c(50), 3), round(c(100), 3), round(c(500), 3)
(1.0, 0.55, 0.1, 0.1)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Constant", "Cosine", "LinearWarmup", "Schedule", "as_schedule"]

Schedule = Callable[[int], float]


@dataclass(frozen=True)
class Constant:
    """Always ``value`` (default 1: the strength as given)."""

    value: float = 1.0

    def __call__(self, step: int) -> float:
        return self.value


@dataclass(frozen=True)
class LinearWarmup:
    """From ``start`` at step 0 linearly to 1 at ``steps``, then 1.

    Why: a tie switched on at full strength from a random start pulls two untrained models
    together before either has learned anything; warming up lets each fit its data first.
    """

    steps: int
    start: float = 0.0

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"LinearWarmup: steps must be >= 1, got {self.steps}")

    def __call__(self, step: int) -> float:
        t = min(max(step, 0) / self.steps, 1.0)
        return self.start + (1.0 - self.start) * t


@dataclass(frozen=True)
class Cosine:
    """Half a cosine from 1 at step 0 to ``final`` at ``steps``, then ``final``."""

    steps: int
    final: float = 0.0

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"Cosine: steps must be >= 1, got {self.steps}")

    def __call__(self, step: int) -> float:
        t = min(max(step, 0) / self.steps, 1.0)
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * t))


def as_schedule(schedule: Schedule | str | None) -> Schedule:
    """``None`` or ``"constant"`` -> `Constant()`; a callable is returned as it is."""
    if schedule is None or schedule == "constant":
        return Constant()
    if isinstance(schedule, str):
        raise ValueError(f"schedule {schedule!r} needs parameters: pass LinearWarmup(steps=...) "
                         f"or Cosine(steps=...) from tying.schedules, or 'constant'")
    if not callable(schedule):
        raise TypeError(f"schedule must be callable step -> float, got {type(schedule).__name__}")
    return schedule
