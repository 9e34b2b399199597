"""Lexicons: word -> phone sequence, from espeak-ng's phoneme output, and the unshared twin.

A word model is the concatenation of its phones' HMMs, so a lexicon is all it takes to give a
word never heard in training a model. `Lexicon.unshared()` gives every word private units with
the same number of states: the whole-word baseline with nothing shared between words.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping

from ..system import require_espeak

__all__ = ["SILENCE", "Lexicon", "espeak_phones"]

SILENCE = "sil"
# espeak-ng -x marks stress and syllable boundaries with these; they are not phones.
_STRESS = "',%=!"


def espeak_phones(words: Iterable[str], voice: str = "en-us") -> dict[str, tuple[str, ...]]:
    """Phone strings of ``words`` from ``espeak-ng -q -x`` (one process for all words).

    Args:
        words: words of the language of ``voice`` (one token each, no spaces).
        voice: the espeak-ng voice whose pronunciation rules are used.

    Returns:
        word -> tuple of espeak phoneme mnemonics, stress marks removed.

    Raises:
        tying.errors.SystemPackageMissing: espeak-ng is not installed.
        ValueError: a word is empty or contains whitespace.

    Example:
        >>> espeak_phones(["cat"])["cat"]  # doctest: +SKIP
        ('k', 'a', 't')
    """
    words = list(words)
    for w in words:
        if not isinstance(w, str) or not w or any(c.isspace() for c in w):
            raise ValueError(f"words must be non-empty strings without whitespace, got {w!r}")
    if not words:
        return {}
    exe = require_espeak("Phone transcription")
    # One word per line; espeak-ng prints one line of phonemes per input line.
    out = subprocess.run([exe, "-v", voice, "-q", "-x", "--sep=_"], input="\n".join(words) + "\n",
                         capture_output=True, text=True, check=True).stdout
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    if len(lines) != len(words):
        # Fall back to one call per word (rare: espeak joined or split lines).
        lines = [subprocess.run([exe, "-v", voice, "-q", "-x", "--sep=_", w], capture_output=True,
                                text=True, check=True).stdout.strip() for w in words]
    result = {}
    for w, line in zip(words, lines):
        phones = []
        for token in line.replace(" ", "_").split("_"):
            token = token.strip(_STRESS)
            if token:
                phones.append(token)
        result[w] = tuple(phones)
    return result


class Lexicon(Mapping):
    """An immutable map word -> phones (a tuple of unit names), with optional silence padding.

    Args:
        pronunciations: word -> sequence of phone names.
        silence: wrap every pronunciation in a shared silence unit (``sil ... sil``).

    Raises:
        ValueError: the lexicon is empty, or a word has no phones.

    Example:
        >>> lex = Lexicon({"cat": ("k", "a", "t"), "tack": ("t", "a", "k")})
        >>> lex["cat"], lex.phones
        (('sil', 'k', 'a', 't', 'sil'), ('a', 'k', 'sil', 't'))
        >>> lex.unshared()["cat"][:2]
        ('cat/0', 'cat/1')
    """

    def __init__(self, pronunciations: Mapping[str, Iterable[str]], *, silence: bool = True):
        if not isinstance(pronunciations, Mapping):
            raise TypeError("pronunciations must be a mapping word -> phones, got "
                            f"{type(pronunciations).__name__}")
        if len(pronunciations) == 0:
            raise ValueError("the lexicon is empty: give at least one word with its phones")
        entries = {}
        for word, phones in pronunciations.items():
            phones = tuple(phones)
            if not phones:
                raise ValueError(f"word {word!r} has no phones; give it a pronunciation")
            entries[word] = (SILENCE, *phones, SILENCE) if silence else phones
        self._entries = entries

    @classmethod
    def from_espeak(cls, words: Iterable[str], voice: str = "en-us", *,
                    silence: bool = True) -> Lexicon:
        """Build a lexicon from espeak-ng's transcriptions (see `espeak_phones`)."""
        return cls(espeak_phones(words, voice), silence=silence)

    def __getitem__(self, word: str) -> tuple[str, ...]:
        try:
            return self._entries[word]
        except KeyError:
            raise KeyError(f"word {word!r} is not in the lexicon ({len(self)} words); "
                           "add its pronunciation") from None

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Lexicon({len(self)} words, {len(self.phones)} phones)"

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self._entries)

    @property
    def phones(self) -> tuple[str, ...]:
        """The sorted set of units the lexicon uses."""
        return tuple(sorted({p for ps in self._entries.values() for p in ps}))

    def subset(self, words: Iterable[str]) -> Lexicon:
        """The lexicon restricted to ``words`` (each must be present)."""
        return Lexicon({w: self[w] for w in words}, silence=False)

    def unshared(self) -> Lexicon:
        """Every word gets private units ``word/0, word/1, ...``: the whole-word HMM baseline.

        Same number of units (hence states) per word as the shared lexicon; nothing is shared.
        """
        return Lexicon({w: tuple(f"{w}/{i}" for i in range(len(ps)))
                        for w, ps in self._entries.items()}, silence=False)

    def covered_by(self, phones: Iterable[str]) -> list[str]:
        """The words all of whose phones are in ``phones``."""
        have = set(phones)
        return [w for w, ps in self._entries.items() if set(ps) <= have]
