"""Layers that share parameters across positions (and their unshared twins)."""

from .cross_stitch import CrossStitch as CrossStitch
from .hashed import HashedConv2d as HashedConv2d
from .hashed import HashedLinear as HashedLinear
from .local import LocallyConnected1d as LocallyConnected1d
from .local import LocallyConnected2d as LocallyConnected2d
from .subsample import Subsample as Subsample
from .time_delay import TimeDelay as TimeDelay

__all__ = [
    "CrossStitch",
    "HashedConv2d",
    "HashedLinear",
    "LocallyConnected1d",
    "LocallyConnected2d",
    "Subsample",
    "TimeDelay",
]
