"""tying.speech.corpus and lexicon: espeak-ng synthesis, cache, noise, splits, transcriptions."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tying.errors import SystemPackageMissing
from tying.speech.corpus import (
    SAMPLE_RATE,
    Speaker,
    add_noise,
    make_speakers,
    noise_rng,
    split_by_speaker,
    synthesize,
    synthesize_corpus,
    trim_silence,
)
from tying.speech.lexicon import Lexicon, espeak_phones

espeak = pytest.mark.system("espeak-ng")


@espeak
def test_synthesis_is_deterministic_and_cached(tmp_path):
    spk = Speaker(variant="f2", speed=170, pitch=60)
    a = synthesize("water", spk, cache_dir=tmp_path)
    files = list(tmp_path.rglob("*.npy"))
    assert len(files) == 1
    b = synthesize("water", spk, cache_dir=tmp_path)              # from the cache
    c = synthesize("water", spk, cache_dir=False)                 # fresh
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert a.dtype == np.float32 and 0.1 < len(a) / SAMPLE_RATE < 2.0
    other = synthesize("water", Speaker(variant="m3", speed=130, pitch=30), cache_dir=tmp_path)
    assert len(other) != len(a) or not np.allclose(other, a)


@espeak
def test_corpus_split_by_speaker(tmp_path):
    speakers = make_speakers(3, seed=1)
    assert len({s.name for s in speakers}) == 3
    utts = synthesize_corpus(["cat", "dog"], speakers, cache_dir=tmp_path, pad_ms=20)
    assert len(utts) == 6
    train, test = split_by_speaker(utts, speakers[2:])
    assert {u.speaker for u in test} == {speakers[2]}
    assert not {u.speaker for u in train} & {u.speaker for u in test}
    # Trimmed, then padded with 20 ms of digital silence at both ends.
    raw = synthesize(utts[0].text, utts[0].speaker, cache_dir=tmp_path)
    assert len(utts[0].audio) - 640 < len(raw)
    assert all(not np.any(u.audio[:320]) and not np.any(u.audio[-320:]) for u in utts)
    assert all(np.abs(u.audio[320:-320]).max() > 0.05 for u in utts)


@espeak
def test_espeak_lexicon():
    phones = espeak_phones(["cat", "ship"])
    assert phones["cat"] == ("k", "a", "t")
    assert phones["ship"] == ("S", "I", "p")
    lex = Lexicon.from_espeak(["cat", "tack"])
    assert lex["tack"] == ("sil", "t", "a", "k", "sil")


def test_missing_espeak_raises_system_package_missing(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SystemPackageMissing, match="apt-get install espeak-ng"):
        synthesize("cat", cache_dir=False)
    with pytest.raises(SystemPackageMissing):
        espeak_phones(["cat"])


def test_noise_hits_the_snr():
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(16000) / 5.0).astype(np.float32)
    for snr in (20.0, 5.0, 0.0):
        noisy = add_noise(x, snr, rng)
        measured = 10 * np.log10(np.mean(x**2) / np.mean((noisy - x) ** 2))
        assert abs(measured - snr) < 0.2
    np.testing.assert_array_equal(add_noise(x, None, rng), x)
    with pytest.raises(ValueError, match="silent"):
        add_noise(np.zeros(100), 10.0, rng)


def test_noise_is_reproducible():
    from tying.speech.corpus import Utterance

    u = Utterance("cat", Speaker(), np.ones(100, dtype=np.float32))
    a = add_noise(u.audio, 10.0, noise_rng(u, 10.0, 0))
    b = add_noise(u.audio, 10.0, noise_rng(u, 10.0, 0))
    c = add_noise(u.audio, 10.0, noise_rng(u, 10.0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_trim_and_bad_values():
    x = np.zeros(16000, dtype=np.float32)
    x[6000:8000] = 0.5
    y = trim_silence(x, margin_ms=10)
    assert 2000 <= len(y) <= 2000 + 2 * 160 + 160
    with pytest.raises(ValueError, match="silent"):
        trim_silence(np.zeros(1000))
    with pytest.raises(ValueError, match="empty"):
        trim_silence(np.zeros(0))
    with pytest.raises(ValueError, match="pitch"):
        Speaker(pitch=120)
    with pytest.raises(ValueError, match="empty"):
        synthesize_corpus([], [Speaker()])
