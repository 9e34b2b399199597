"""Name patterns shared by every pairing API: `*` is one dotted component, `**` any number.

>>> from tying.names import compile_pattern
>>> bool(compile_pattern("blocks.*.weight").fullmatch("blocks.3.weight"))
True
>>> bool(compile_pattern("blocks.*").fullmatch("blocks.3.attn"))
False
>>> bool(compile_pattern("blocks.**").fullmatch("blocks.3.attn"))
True
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = ["compile_pattern", "fill_pattern", "has_wildcard", "match", "suggest"]


def has_wildcard(pattern: str) -> bool:
    return "*" in pattern


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A regex for ``pattern``; each wildcard is a capture group (in order)."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"a name pattern must be a non-empty string, got {pattern!r}")
    parts = re.split(r"(\*\*|\*)", pattern)
    regex = "".join("(.+)" if p == "**" else "([^.]+)" if p == "*" else re.escape(p)
                    for p in parts)
    return re.compile(regex)


def match(pattern: str, names: Iterable[str]) -> list[tuple[str, tuple[str, ...]]]:
    """The names that ``pattern`` matches in full, each with its wildcard captures."""
    rx = compile_pattern(pattern)
    out = []
    for name in names:
        m = rx.fullmatch(name)
        if m:
            out.append((name, m.groups()))
    return out


def fill_pattern(pattern: str, captures: tuple[str, ...]) -> str:
    """Put ``captures`` into the wildcards of ``pattern``, in order."""
    parts = re.split(r"(\*\*|\*)", pattern)
    n_wild = sum(p in ("*", "**") for p in parts)
    if n_wild > len(captures):
        raise ValueError(f"pattern {pattern!r} has {n_wild} wildcards but the other side "
                         f"captured only {len(captures)}: {captures}")
    it = iter(captures)
    return "".join(next(it) if p in ("*", "**") else p for p in parts)


def suggest(name: str, names: Iterable[str], n: int = 3) -> str:
    """' Did you mean a, b?' for the closest names, or '' when nothing is close."""
    names = list(names)
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if not close:
        # patterns compare badly with whole names; try the pattern's literal prefix
        prefix = re.split(r"\*", name)[0]
        close = [x for x in names if prefix and x.startswith(prefix)][:n]
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
