"""bdg's front end: VTLP (vocal tract length perturbation) and dither."""

from __future__ import annotations

import numpy as np
import pytest

from tying.experiments import bdg
from tying.speech.corpus import Speaker, Utterance
from tying.speech.features import FeatureConfig, log_mel, mel_filterbank, vtlp_warp


def test_vtlp_warp_is_piecewise_linear_and_keeps_nyquist():
    f = np.linspace(0, 8000, 801)
    np.testing.assert_array_equal(vtlp_warp(f, 1.0, 16000), f)
    for a in (0.9, 1.1):
        w = vtlp_warp(f, a, 16000)
        knee = 4800 * min(a, 1) / a
        np.testing.assert_allclose(w[f <= knee], a * f[f <= knee])
        assert w[0] == 0 and w[-1] == pytest.approx(8000)
        assert np.all(np.diff(w) > 0)                          # monotone: no folding
        assert np.all(np.abs(np.diff(np.diff(w[f > knee]))) < 1e-9)   # straight above the knee
    with pytest.raises(ValueError, match="alpha"):
        vtlp_warp(f, 0.5, 16000)


def test_warp_one_is_the_unwarped_filterbank():
    fb = mel_filterbank(16000, 512, 16, 100.0, 5500.0)
    np.testing.assert_array_equal(mel_filterbank(16000, 512, 16, 100.0, 5500.0, 1.0), fb)
    x = np.random.default_rng(0).standard_normal(4000)
    cfg = FeatureConfig(n_mels=16, fmin=100.0, fmax=5500.0)
    np.testing.assert_array_equal(log_mel(x, 16000, cfg, warp=1.0), log_mel(x, 16000, cfg))
    assert not np.array_equal(log_mel(x, 16000, cfg, warp=1.1), log_mel(x, 16000, cfg))


@pytest.mark.parametrize("freq", [700.0, 1500.0, 3000.0])
def test_warp_moves_a_tone_to_the_band_of_alpha_times_its_frequency(freq):
    sr, cfg = 16000, FeatureConfig(n_mels=16, fmin=100.0, fmax=5500.0)
    x = np.sin(2 * np.pi * freq * np.arange(sr // 4) / sr)
    fb = mel_filterbank(sr, 512, 16, 100.0, 5500.0)
    centre = np.linspace(0, sr / 2, 257)[fb.argmax(1)]

    def peak(w):                   # the band with the most energy
        return int(np.argmax(log_mel(x, sr, cfg, warp=w).mean(0)))

    lo, mid, hi = peak(0.88), peak(1.0), peak(1.12)
    assert lo <= mid <= hi and lo < hi                      # up for alpha > 1, down below 1
    expect = np.argmin(np.abs(centre - 1.12 * freq))        # where 1.12 * f sits unwarped
    assert abs(hi - expect) <= 1


def _syllable():
    sr = 16000
    t = np.arange(int(0.25 * sr)) / sr
    audio = np.zeros(int(0.3 * sr), np.float32)        # 50 ms of digital silence first
    audio[int(0.05 * sr):] = (0.3 * np.sin(2 * np.pi * 500 * t) * np.exp(-3 * t)).astype(np.float32)
    return Utterance("b'A:", Speaker("en-us", "m1", 160, 50), audio)


def test_onset_window_defaults_unchanged_and_dither_fills_silence():
    u = _syllable()
    plain = bdg.onset_window(u, None, 0)
    assert plain.shape == (16, 15)
    np.testing.assert_array_equal(bdg.onset_window(u, None, 0, warp=1.0, dither_db=None), plain)
    # Digital silence gives log(1e-10) = -23 in every band before the onset: a flat artefact.
    raw = log_mel(u.audio, 16000, bdg.FEATURES)
    assert raw[:2].max() < -20
    dithered = bdg.onset_window(u, None, 0, dither_db=45.0)
    # With a floor 45 dB down, the silent frames sit far above log(floor) but far below speech.
    spread = dithered.max() - dithered.min()
    assert spread < plain.max() - plain.min()
    np.testing.assert_array_equal(bdg.onset_window(u, None, 0, dither_db=45.0), dithered)
    assert not np.array_equal(bdg.onset_window(u, None, 1, dither_db=45.0), dithered)


def test_vtlp_copies_are_deterministic_warped_and_off_by_default():
    u = _syllable()
    factors = [bdg.vtlp_factor(u, 10.0, k, 0, 0.1) for k in range(20)]
    assert all(0.9 <= a <= 1.1 for a in factors) and len(set(factors)) == 20
    assert factors == [bdg.vtlp_factor(u, 10.0, k, 0, 0.1) for k in range(20)]
    assert bdg.vtlp_factor(u, 10.0, 3, 0, 0.0) == 1.0
    plain, y = bdg._dataset([u], bdg.SNRS, 0, 2)
    assert plain.shape == (1 + 4 * 2, 16, 15) and (y == 0).all()
    same, _ = bdg._dataset([u], bdg.SNRS, 0, 2, vtlp=0.0, clean_copies=1, dither_db=None)
    np.testing.assert_array_equal(same, plain)
    warped, _ = bdg._dataset([u], bdg.SNRS, 0, 2, vtlp=0.1, clean_copies=3)
    assert warped.shape == (3 + 4 * 2, 16, 15)
    assert not np.allclose(warped[0], warped[1])        # clean copies differ only by the warp
    np.testing.assert_array_equal(bdg._dataset([u], bdg.SNRS, 0, 2, vtlp=0.1, clean_copies=3)[0],
                                  warped)
