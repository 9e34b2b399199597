"""Checks for the Debian packages some features need (espeak-ng, dataset-fashion-mnist)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import SystemPackageMissing

__all__ = ["FASHION_MNIST_DIR", "require_espeak", "require_fashion_mnist", "system_package_status"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def require_espeak(what: str = "Speech synthesis") -> str:
    """Return the path of the espeak-ng executable, or raise SystemPackageMissing."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemPackageMissing("espeak-ng", what)
    return exe


def require_fashion_mnist(root: str | Path | None = None, what: str = "Fashion-MNIST") -> Path:
    """Return the directory holding the Fashion-MNIST IDX files, or raise.

    With ``root=None`` the Debian package's directory is used; a user-given ``root`` that lacks
    the files raises FileNotFoundError naming the missing files.
    """
    directory = Path(root) if root is not None else FASHION_MNIST_DIR
    missing = [f for f in _FASHION_FILES
               if not (directory / f).exists() and not (directory / f"{f}.gz").exists()]
    if missing:
        if root is None:
            raise SystemPackageMissing("dataset-fashion-mnist", what)
        raise FileNotFoundError(f"{directory} lacks the Fashion-MNIST IDX files {missing} "
                                "(plain or .gz); point root at a directory that has them")
    return directory


def system_package_status() -> dict[str, bool]:
    """Which of the optional Debian packages are installed (for reports and `make demo`)."""
    status = {}
    for package, check in (("espeak-ng", require_espeak), ("dataset-fashion-mnist",
                                                            require_fashion_mnist)):
        try:
            check()
            status[package] = True
        except SystemPackageMissing:
            status[package] = False
    return status
