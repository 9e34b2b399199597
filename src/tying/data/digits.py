"""scikit-learn's 8×8 digits (1,797 images, bundled with the package): the embedded default."""

from __future__ import annotations

import numpy as np
import torch

from .split import Split

__all__ = ["load_digits"]


def load_digits(test_fraction: float = 0.25, size: int = 8) -> Split:
    """The digits, split by a fixed stratified shuffle (the same split on every machine).

    Args:
        test_fraction: share of each class held out for testing.
        size: image side; 8 is the native size, a larger value zero-pads symmetrically
            (e.g. 32 for LeNet-5, which wants 32×32 input).
    """
    from sklearn.datasets import load_digits as _sk_load

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if size < 8:
        raise ValueError(f"size must be >= 8 (the digits are 8×8), got {size}")
    data = _sk_load()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.int64)
    if size > 8:
        lo = (size - 8) // 2
        x = torch.nn.functional.pad(x, (lo, size - 8 - lo, lo, size - 8 - lo))
    rng = np.random.default_rng(12345)
    test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(data.target == c)
        test[rng.permutation(idx)[: round(len(idx) * test_fraction)]] = True
    t = torch.from_numpy(test)
    return Split(x[~t], y[~t], x[t], y[t], 10, "digits")
