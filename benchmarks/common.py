"""What every benchmark shares: machine facts, interleaved timing with medians, JSON output."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tying.experiments.result import atomic_write_text
from tying.experiments.runner import environment

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """The machine a result was measured on (shared and noisy: ratios, not absolute times)."""
    import os

    return {**environment(), "load_average_1m": os.getloadavg()[0]}


def interleaved(fns: dict[str, Callable[[], object]], rounds: int = 15,
                min_time: float = 0.2, clock: str = "wall") -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved rounds.

    Each round times every function once (order rotated each round) over enough calls to
    last ``min_time``; the median over rounds resists the bursts of a shared machine.
    ``clock="cpu"`` measures this thread's CPU time instead of wall time: with one torch
    thread it ignores the time other processes hold the core.
    """
    now = time.thread_time if clock == "cpu" else time.perf_counter
    names = list(fns)
    for f in fns.values():  # warm-up (allocations, lazy init, compilation)
        f()
    calls = {}
    for name, f in fns.items():
        n, start = 0, now()
        while now() - start < min_time / 4:
            f()
            n += 1
        calls[name] = max(1, n * 4)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            f = fns[name]
            start = now()
            for _ in range(calls[name]):
                f()
            samples[name].append((now() - start) / calls[name])
    return {n: statistics.median(s) for n, s in samples.items()}


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(),
               "torch_threads": torch.get_num_threads(), **payload}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    width = {k: max(len(k), *(len(_fmt(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(width[k]) for k in keys)]
    lines += ["  ".join(_fmt(r[k]).ljust(width[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
