"""Shared test set-up: system-package markers, thread counts, small helpers."""

from __future__ import annotations

import os

import pytest
import torch

from tying.errors import SystemPackageMissing
from tying.system import require_espeak, require_fashion_mnist

# One intra-op thread per test process: the tests' models are small, and with pytest-xdist's two
# workers on two cores more threads only oversubscribe them (measured several times slower).
torch.set_num_threads(1)

_CHECKS = {"espeak-ng": require_espeak, "dataset-fashion-mnist": require_fashion_mnist}


def pytest_runtest_setup(item):
    """`@pytest.mark.system("pkg")`: skip when pkg is missing, fail instead in CI.

    CI sets TYING_REQUIRE_SYSTEM_PACKAGES=1 so that a test meant to run there cannot quietly skip.
    """
    for mark in item.iter_markers(name="system"):
        for package in mark.args:
            if package not in _CHECKS:
                raise ValueError(f"unknown system package {package!r}; known: {sorted(_CHECKS)}")
            try:
                _CHECKS[package]()
            except SystemPackageMissing as err:
                if os.environ.get("TYING_REQUIRE_SYSTEM_PACKAGES") == "1":
                    pytest.fail(f"system package missing in CI: {err}", pytrace=False)
                pytest.skip(f"system package missing: {err.package} (install: {err.install})")
