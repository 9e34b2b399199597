"""The exceptions `tying` raises beyond the built-in ValueError and TypeError."""

from __future__ import annotations

__all__ = ["SystemPackageMissing", "TieError"]


class TieError(RuntimeError):
    """A tie is broken, missing, or cannot be made; the message names the parameters and the fix."""


class SystemPackageMissing(RuntimeError):
    """A Debian package that a feature needs is not installed.

    Attributes:
        package: the Debian package name.
        install: the command that installs it.
    """

    def __init__(self, package: str, what: str):
        self.package = package
        self.install = f"sudo apt-get install {package}"
        super().__init__(f"{what} needs the Debian package {package!r}, which is not installed. "
                         f"Install it with: {self.install}")
