"""Experiments: one file per experiment, each registered with `@register_experiment`.

>>> from tying.experiments import list_experiments
>>> "memory" in [e.name for e in list_experiments()]
True
"""

from .registry import Experiment, get_experiment, list_experiments, register_experiment
from .result import Claim, Metric, Result
from .runner import Context, run_all, run_experiment, seed_everything, torch_threads

__all__ = [
    "Claim",
    "Context",
    "Experiment",
    "Metric",
    "Result",
    "get_experiment",
    "list_experiments",
    "register_experiment",
    "run_all",
    "run_experiment",
    "seed_everything",
    "torch_threads",
]
