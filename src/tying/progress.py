"""Progress bars for long loops: tqdm on a terminal, silent in logs and CI."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None,
             leave: bool = False) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar.

    The bar shows on a terminal and hides when stderr is not one (logs, CI). Set
    ``TYING_PROGRESS=1`` to force it on, ``TYING_PROGRESS=0`` to force it off.
    """
    forced = os.environ.get("TYING_PROGRESS")
    disable = None if forced is None else forced == "0"
    return iter(tqdm(iterable, desc=desc, total=total, leave=leave, disable=disable,
                     dynamic_ncols=True))
