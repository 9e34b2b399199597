"""A synthesized speech corpus: espeak-ng speakers, additive noise, disk cache, speaker splits.

Everything is deterministic: a `Speaker` is a voice, a variant, a speed and a pitch; the same
(text, speaker) always gives the same samples (cached on disk as int16 ``.npy``), and noise at a
given SNR is drawn from a generator seeded by (text, speaker, snr, seed).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..system import require_espeak

__all__ = ["SAMPLE_RATE", "VARIANTS", "WORDS", "Speaker", "Utterance", "add_noise",
           "default_cache_dir", "make_speakers", "noise_rng", "split_by_speaker", "synthesize",
           "synthesize_corpus", "trim_silence"]

SAMPLE_RATE = 16000  # the corpus rate; espeak-ng's 22,050 Hz output is resampled to it
_ESPEAK_RATE = 22050
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "steph", "linda", "max",
            "paul", "andy", "anika", "john", "david", "robert", "victor", "zac", "edward")

# A vocabulary of common English words (one to three syllables).
_WORD_TEXT = """
about above across after again against air all along also always animal answer apple area arm
around away baby back bad ball bank base bear beat bed before begin behind bell best better big
bird black blood blue board boat body book born both bottom box boy bread break bridge bring
brother brown build burn busy buy call came camp car card care carry case cat catch cause cell
center chair chance change check child city class clean clear clock close cloud coast cold color
come common cook cool corn cost cotton could count country course cover cow cross cry cup cut
dance dark day dead deal dear deep desk die dinner dog dollar door double down draw dream dress
drink drive drop dry duck during early earth east easy eat edge egg eight end enemy enough even
evening ever every eye face fact fair fall family famous farm fast father fear feel feet few field
fight figure fill final find fine finger fire first fish five floor flower fly follow food foot
force forest form forward four free fresh friend front fruit full game garden gas gate girl give
glass gold good grass gray great green ground group grow gun hair half hall hand happy hard hat
have head hear heart heat heavy help high hill history hold hole home hope horse hot hour house
huge hundred hunt ice idea inch iron island job join joy judge jump just keep key kill kind king
kitchen knee knife know lady lake land large last late laugh law lead leaf learn leave left leg
lesson letter level lift light like line lion list little live long look lose loud love low lunch
machine main make man many map mark market match meat meet metal middle milk mind minute miss
money month moon morning mother motor mountain mouth move music name nation near neck need never
new next nice night nine noise north nose note number ocean office oil old open orange paper park
party pass path pay peace pen people person pick picture piece pig place plan plant play pocket
point pool poor power press pretty pull push quick quiet race rain raise reach read ready red
river road rock room root rope round rule run safe salt sand save school sea seat second seed sell
send seven shape sheep shell ship shoe shop short show side sign silver simple sing sister sit six
size skin sky sleep slow small smile snow soft soil song sound south space speak speed spring
square stand star start station stay step stick stone stop store story street strong study sugar
summer sun table tail talk tall teach team test thank thick thin thing think three time tiny today
tooth top touch town track train tree truck true turn twelve two under until valley village visit
voice wait walk wall want warm wash watch water wave week weight west wheel white whole wide wife
wild win wind window winter wire wish woman wonder wood word work world write yard year yellow
young
"""
WORDS = tuple(_WORD_TEXT.split())


def default_cache_dir() -> Path:
    """``$TYING_CACHE/speech`` if set, else ``~/.cache/tying/speech``."""
    root = os.environ.get("TYING_CACHE")
    return Path(root) / "speech" if root else Path.home() / ".cache" / "tying" / "speech"


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak-ng voice + variant, a speed and a pitch.

    Attributes:
        voice: espeak-ng voice (language/accent), e.g. ``en-us``.
        variant: espeak-ng variant (``m1``..``m7``, ``f1``..``f5``, ``klatt``, ...).
        speed: words per minute (espeak-ng ``-s``; 80..450).
        pitch: base pitch 0..99 (espeak-ng ``-p``).
    """

    voice: str = "en-us"
    variant: str = "m1"
    speed: int = 160
    pitch: int = 50

    def __post_init__(self):
        if not 80 <= int(self.speed) <= 450:
            raise ValueError(f"speed must be in 80..450 words per minute, got {self.speed}")
        if not 0 <= int(self.pitch) <= 99:
            raise ValueError(f"pitch must be in 0..99, got {self.pitch}")

    @property
    def name(self) -> str:
        return f"{self.voice}+{self.variant}:s{self.speed}:p{self.pitch}"


def make_speakers(n: int, *, seed: int = 0, voice: str = "en-us",
                  variants: Sequence[str] = VARIANTS) -> list[Speaker]:
    """``n`` distinct speakers: variants in turn, speed and pitch drawn from ``seed``.

    Example:
        >>> [s.name for s in make_speakers(2)]  # doctest: +SKIP
        ['en-us+m1:s152:p41', 'en-us+m2:s171:p63']
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    speakers = []
    for i in range(n):
        speakers.append(Speaker(voice, variants[i % len(variants)],
                                int(rng.integers(130, 200)), int(rng.integers(25, 80))))
    return speakers


def _key(*parts) -> str:
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()


def synthesize(text: str, speaker: Speaker = Speaker(), *, cache_dir: str | Path | None = None,
               phonemes: bool = False) -> np.ndarray:
    """Speak ``text`` with espeak-ng; float32 samples in [-1, 1] at `SAMPLE_RATE` (16 kHz).

    Args:
        text: the words (or, with ``phonemes=True``, espeak phoneme mnemonics such as ``b'A:``).
        speaker: who speaks.
        cache_dir: where to cache (default `default_cache_dir()`); ``False`` disables caching.
        phonemes: treat ``text`` as phoneme input (espeak-ng's ``[[...]]``).

    Raises:
        tying.errors.SystemPackageMissing: espeak-ng is not installed.
        ValueError: ``text`` is empty, or espeak-ng produced no audio.

    Example:
        >>> audio = synthesize("hello")  # doctest: +SKIP
        >>> audio.dtype, audio.ndim  # doctest: +SKIP
        (dtype('float32'), 1)
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    exe = require_espeak("Speech synthesis")
    spoken = f"[[{text}]]" if phonemes else text
    path = None
    if cache_dir is not False:
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        key = _key("v1", spoken, speaker.voice, speaker.variant, speaker.speed, speaker.pitch)
        path = directory / key[:2] / f"{key}.npy"
        if path.exists():
            return np.load(path).astype(np.float32) / 32768.0
    cmd = [exe, "-v", f"{speaker.voice}+{speaker.variant}", "-s", str(speaker.speed),
           "-p", str(speaker.pitch), "--stdout", spoken]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    pcm = np.frombuffer(raw[44:], dtype="<i2")  # 44-byte WAV header, then 16-bit mono PCM
    if pcm.size == 0:
        raise ValueError(f"espeak-ng produced no audio for {spoken!r} with {speaker.name}")
    from scipy.signal import resample_poly

    audio = resample_poly(pcm.astype(np.float64), SAMPLE_RATE // 50, _ESPEAK_RATE // 50)
    pcm16 = np.clip(np.round(audio), -32768, 32767).astype(np.int16)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, pcm16)
    return pcm16.astype(np.float32) / 32768.0


def trim_silence(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, *, threshold_db: float = -35.0,
                 margin_ms: float = 30.0) -> np.ndarray:
    """Cut leading and trailing silence (10 ms frames below ``threshold_db`` re. the peak frame).

    Raises:
        ValueError: the audio is empty or silent.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        raise ValueError("audio is empty (0 samples)")
    hop = max(1, sample_rate // 100)
    n = audio.size // hop
    if n == 0 or not np.any(audio):
        raise ValueError("audio is silent (all samples are zero)")
    energy = np.square(audio[: n * hop].reshape(n, hop)).mean(1)
    db = 10 * np.log10(energy + 1e-12)
    loud = np.nonzero(db > db.max() + threshold_db)[0]
    margin = int(margin_ms * sample_rate / 1000)
    start = max(0, loud[0] * hop - margin)
    stop = min(audio.size, (loud[-1] + 1) * hop + margin)
    return audio[start:stop]


def add_noise(audio: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` relative to the signal's mean power.

    ``snr_db=None`` (or ``inf``) returns the audio unchanged.
    """
    if snr_db is None or np.isinf(snr_db):
        return np.asarray(audio, dtype=np.float32)
    audio = np.asarray(audio, dtype=np.float64)
    power = float(np.mean(audio**2))
    if power == 0:
        raise ValueError("cannot set an SNR for silent audio (signal power 0)")
    noise = rng.standard_normal(audio.shape) * np.sqrt(power / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)


@dataclass
class Utterance:
    """One synthesized token: what was said, by whom, and the samples."""

    text: str
    speaker: Speaker
    audio: np.ndarray
    sample_rate: int = SAMPLE_RATE
    snr_db: float | None = None


def synthesize_corpus(texts: Iterable[str], speakers: Iterable[Speaker], *,
                      cache_dir: str | Path | None = None, phonemes: bool = False,
                      trim: bool = True, pad_ms: float = 0.0,
                      progress: Callable | None = None) -> list[Utterance]:
    """Every text spoken by every speaker (clean; add noise later with `add_noise`).

    ``trim`` cuts espeak's leading/trailing silence; ``pad_ms`` then puts that much digital
    silence back at both ends (so a model's silence units see noise once it is added).
    """
    texts, speakers = list(texts), list(speakers)
    if not texts:
        raise ValueError("texts is empty: give at least one word to synthesize")
    if not speakers:
        raise ValueError("speakers is empty: give at least one Speaker")
    jobs = [(t, s) for s in speakers for t in texts]
    it = progress(jobs, "synthesize") if progress is not None else jobs
    pad = np.zeros(int(pad_ms * SAMPLE_RATE / 1000), dtype=np.float32)
    out = []
    for text, spk in it:
        audio = synthesize(text, spk, cache_dir=cache_dir, phonemes=phonemes)
        if trim:
            audio = trim_silence(audio)
        if pad.size:
            audio = np.concatenate([pad, audio, pad])
        out.append(Utterance(text, spk, audio))
    return out


def split_by_speaker(utterances: Sequence[Utterance], test_speakers: Iterable[Speaker]
                     ) -> tuple[list[Utterance], list[Utterance]]:
    """(train, test): test holds every utterance of ``test_speakers``, train none of them."""
    test = set(test_speakers)
    train = [u for u in utterances if u.speaker not in test]
    held = [u for u in utterances if u.speaker in test]
    if not held:
        raise ValueError("no utterance belongs to the test speakers; check test_speakers")
    return train, held


def noise_rng(utt: Utterance, snr_db: float | None, seed: int) -> np.random.Generator:
    """A generator seeded by (text, speaker, snr, seed): the same noise on every run."""
    return np.random.default_rng(int(_key(utt.text, utt.speaker.name, snr_db, seed)[:15], 16))
