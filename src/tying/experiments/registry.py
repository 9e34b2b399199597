"""The experiment registry: `@register_experiment` and look-up by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Experiment", "get_experiment", "list_experiments", "register_experiment"]


@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
        name: what `tying run NAME` takes.
        fn: ``fn(ctx) -> Result``; ``ctx`` is a `tying.experiments.runner.Context`.
        description: one line for `tying list` and the report.
        presets: preset name -> config dict; every experiment has ``quick`` and ``full``.
        default_seeds: preset name -> number of seeds when ``--seeds`` is not given.
        needs: Debian packages the experiment cannot run without.
    """

    name: str
    fn: Callable[..., Any]
    description: str
    presets: dict[str, dict[str, Any]]
    default_seeds: dict[str, int] = field(default_factory=lambda: {"quick": 1, "full": 3})
    needs: tuple[str, ...] = ()


_REGISTRY: dict[str, Experiment] = {}


def register_experiment(name: str, *, description: str, presets: dict[str, dict[str, Any]],
                        default_seeds: dict[str, int] | None = None,
                        needs: tuple[str, ...] = ()):
    """Register ``fn(ctx) -> Result`` as the experiment ``name``."""
    missing = {"quick", "full"} - set(presets)
    if missing:
        raise ValueError(f"experiment {name!r} lacks the presets {sorted(missing)}")

    def decorate(fn):
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"an experiment named {name!r} is already registered")
        _REGISTRY[name] = Experiment(name, fn, description, presets,
                                     default_seeds or {"quick": 1, "full": 3}, tuple(needs))
        return fn

    return decorate


def _load_all() -> None:
    from . import _catalog  # noqa: F401  (imports every experiment module, which registers it)


def list_experiments() -> list[Experiment]:
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_experiment(name: str) -> Experiment:
    _load_all()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no experiment named {name!r}.{hint} "
                       f"Valid names: {', '.join(sorted(_REGISTRY))}, or 'all'.")
    return _REGISTRY[name]
