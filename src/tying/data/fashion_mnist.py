"""Fashion-MNIST from IDX files (the Debian package `dataset-fashion-mnist`, or any directory)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from ..system import require_fashion_mnist
from .split import Split

__all__ = ["load_fashion_mnist", "read_idx"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) with every header field checked against the file size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: header needs {header} bytes, file has {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: header promises {expected} bytes for shape {shape}, "
                         f"file has {len(raw)} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(f"{directory} has no {stem}[.gz]")


def load_fashion_mnist(root: str | Path | None = None, size: int = 28,
                       limit_train: int | None = None, limit_test: int | None = None) -> Split:
    """Fashion-MNIST: 60,000 training and 10,000 test images, 28×28, float32 in [0, 1].

    Args:
        root: a directory of IDX files; default the Debian package's directory
            /usr/share/datasets/fashion-mnist (`apt-get install dataset-fashion-mnist`).
        size: 28, or larger to zero-pad (32 for LeNet-5).
        limit_train, limit_test: keep only the first N images (for quick runs).
    """
    directory = require_fashion_mnist(root)
    xs, ys = [], []
    for prefix, limit in (("train", limit_train), ("t10k", limit_test)):
        x = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))[:limit]
        y = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))[:limit]
        if len(x) != len(y):
            raise ValueError(f"{directory}: {len(x)} {prefix} images but {len(y)} labels")
        xs.append(torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1))
        ys.append(torch.from_numpy(y.astype(np.int64)))
    if size < 28:
        raise ValueError(f"size must be >= 28, got {size}")
    if size > 28:
        lo = (size - 28) // 2
        xs = [torch.nn.functional.pad(x, (lo, size - 28 - lo, lo, size - 28 - lo)) for x in xs]
    return Split(xs[0], ys[0], xs[1], ys[1], 10, "fashion-mnist")
