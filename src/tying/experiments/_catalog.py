"""Imports every experiment module so that each registers itself. Add new experiments here."""

from . import (
    bdg,  # noqa: F401
    domains,  # noqa: F401
    hybrid,  # noqa: F401
    lenet,  # noqa: F401
    memory,  # noqa: F401
    mnist1d,  # noqa: F401
    multitask,  # noqa: F401
    phonemes,  # noqa: F401
    sws,  # noqa: F401
)
