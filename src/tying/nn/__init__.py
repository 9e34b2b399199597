"""Layers that share parameters across positions (and their unshared twins)."""

from .local import LocallyConnected1d as LocallyConnected1d
from .local import LocallyConnected2d as LocallyConnected2d
from .subsample import Subsample as Subsample
from .time_delay import TimeDelay as TimeDelay

__all__ = ["LocallyConnected1d", "LocallyConnected2d", "Subsample", "TimeDelay"]
