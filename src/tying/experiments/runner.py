"""Running experiments: the context an experiment gets, and the files a run writes."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ..errors import SystemPackageMissing
from ..progress import progress
from .registry import Experiment, get_experiment, list_experiments
from .result import Result

__all__ = ["Context", "RunSettingsError", "environment", "run_all", "run_experiment",
           "seed_everything", "torch_threads"]

T = TypeVar("T")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block, then restore the previous count.

    Experiments run on one thread by default: on a 2-core machine shared with other work,
    torch's one-thread-per-core default oversubscribes the cores, and small models were
    measured 10–40× slower that way.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def environment() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


@dataclass
class Context:
    """What an experiment function receives.

    Attributes:
        experiment: the registry entry.
        preset: ``quick`` or ``full``.
        seeds: the seeds to run (mean ± std over them).
        config: the preset's configuration with any overrides (a copy; read it freely).
        out_dir: where plots go; results.json and report.md are written there too.
        overrides: the settings given on the command line (`tying run ... --set KEY=VALUE`).
    """

    experiment: Experiment
    preset: str
    seeds: list[int]
    config: dict[str, Any]
    out_dir: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    def result(self) -> Result:
        return Result(experiment=self.experiment.name, preset=self.preset, seeds=list(self.seeds),
                      config=dict(self.config), description=self.experiment.description,
                      overrides=dict(self.overrides))

    def progress(self, iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
        return progress(iterable, f"{self.experiment.name}: {desc}", total=total)

    def save_plot(self, result: Result, fig, name: str) -> Path:
        """Save a matplotlib figure as PNG in the run directory and list it in the result."""
        import matplotlib.pyplot as plt

        path = self.out_dir / name
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        if name not in result.plots:
            result.plots.append(name)
        return path


class RunSettingsError(ValueError):
    """A run was asked for with settings it cannot have (preset, seed count, overrides)."""


def run_experiment(name: str, preset: str = "quick", seeds: int | None = None,
                   out: str | Path = "runs", threads: int = 1,
                   overrides: dict[str, Any] | None = None) -> Result:
    """Run one experiment and write ``out/NAME/{results.json, report.md, *.png}``.

    ``threads`` is torch's intra-op thread count for the run (see `torch_threads`); it is
    recorded in the result's environment. ``overrides`` replace top-level keys of the preset's
    configuration (an unknown key is an error); the result records them and its report's
    "Reproduce" command repeats them.
    """
    import matplotlib

    matplotlib.use("Agg")
    exp = get_experiment(name)
    if preset not in exp.presets:
        raise RunSettingsError(f"experiment {name!r} has no preset {preset!r}; "
                               f"choose one of {sorted(exp.presets)}")
    n_seeds = exp.default_seeds.get(preset, 1) if seeds is None else seeds
    if n_seeds < 1:
        raise RunSettingsError(f"--seeds must be at least 1, got {n_seeds}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(exp.presets[preset]))
    if unknown:
        raise RunSettingsError(f"experiment {name!r} preset {preset!r} has no setting(s) "
                               f"{unknown}; its settings: {sorted(exp.presets[preset])}")
    out_dir = Path(out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(exp, preset, list(range(n_seeds)), {**exp.presets[preset], **overrides},
                  out_dir, overrides)
    with torch_threads(threads):
        start = time.perf_counter()
        result = exp.fn(ctx)
        result.seconds = time.perf_counter() - start
        result.environment = environment()
    result.write(out_dir)
    return result


def run_all(preset: str = "quick", seeds: int | None = None, out: str | Path = "runs",
            names: list[str] | None = None,
            threads: int = 1) -> tuple[list[Result], list[tuple[str, str]]]:
    """Run every experiment; one that needs a missing system package is skipped, not fatal.

    Returns the results and a list of (experiment, reason) for the skipped ones.
    """
    results, skipped = [], []
    for exp in list_experiments():
        if names is not None and exp.name not in names:
            continue
        print(f"== {exp.name} ({preset})", file=sys.stderr, flush=True)
        try:
            results.append(run_experiment(exp.name, preset, seeds, out, threads))
        except SystemPackageMissing as err:
            skipped.append((exp.name, str(err)))
            print(f"   skipped: {err}", file=sys.stderr, flush=True)
    return results, skipped
