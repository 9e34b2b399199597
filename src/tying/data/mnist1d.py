"""MNIST-1D (Greydanus 2020), generated locally by the `mnist1d` package — never downloaded."""

from __future__ import annotations

import random

import numpy as np
import torch

from .split import Split

__all__ = ["load_mnist1d"]


def load_mnist1d(num_samples: int = 5000, *, length: int = 40, train_split: float = 0.8,
                 seed: int = 42, **overrides) -> Split:
    """Generate MNIST-1D with ``mnist1d.data.make_dataset`` (no network access).

    The defaults are the package's: 5,000 sequences of length 40, 4,000 train / 1,000 test,
    generator seed 42 (the published data set). Sequences come as (N, 1, T) float32 — one channel
    of T frames, ready for `tying.nn.TimeDelay` — with labels 0–9.

    Args:
        num_samples: sequences to generate (split by ``train_split``).
        length: ``final_seq_length``, frames per sequence.
        train_split: share of the sequences used for training.
        seed: the generator's seed.
        **overrides: any other key of ``mnist1d.data.get_dataset_args`` (e.g. ``iid_noise_scale``).

    The global ``random`` / ``numpy`` state (which the package reseeds) is restored afterwards.

    Example:
        >>> split = load_mnist1d(num_samples=200)
        >>> split.x_train.shape, split.x_test.shape
        (torch.Size([160, 1, 40]), torch.Size([40, 1, 40]))
    """
    from mnist1d.data import get_dataset_args, make_dataset

    if num_samples < 10:
        raise ValueError(f"num_samples must be >= 10 (one per class), got {num_samples}")
    if not 0.0 < train_split < 1.0:
        raise ValueError(f"train_split must lie in (0, 1), got {train_split}")
    args = get_dataset_args()  # an ObjectView over a dict; the url inside is never used
    known = set(vars(args))
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown MNIST-1D arguments {sorted(unknown)}; valid: {sorted(known)}")
    vars(args).update(num_samples=num_samples, final_seq_length=length,
                      train_split=train_split, seed=seed, **overrides)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)

    def tensors(x, y):
        return (torch.tensor(np.asarray(x), dtype=torch.float32).unsqueeze(1),
                torch.tensor(np.asarray(y), dtype=torch.int64))

    x_tr, y_tr = tensors(data["x"], data["y"])
    x_te, y_te = tensors(data["x_test"], data["y_test"])
    return Split(x_tr, y_tr, x_te, y_te, 10, "mnist1d")
