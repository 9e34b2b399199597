"""Imports every experiment module so that each registers itself. Add new experiments here."""

from . import memory  # noqa: F401
from . import domains  # noqa: F401
from . import phonemes  # noqa: F401
from . import hybrid  # noqa: F401
from . import mnist1d  # noqa: F401
from . import lenet  # noqa: F401
