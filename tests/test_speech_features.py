"""tying.speech.features: the filterbank, log-mel, MFCC and deltas against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.fft import dct

from tying.speech.features import FeatureConfig, deltas, log_mel, mel_filterbank, mfcc


def test_mel_filterbank_triangles():
    fb = mel_filterbank(16000, 512, 40, 60.0, None)
    assert fb.shape == (40, 257)
    assert np.all(fb.max(1) > 0.5)                            # every band catches FFT bins
    fine = mel_filterbank(16000, 16384, 40, 60.0, None)
    np.testing.assert_allclose(fine.max(1), 1.0, atol=0.02)   # triangles peak at 1
    peaks = fb.argmax(1)
    assert np.all(np.diff(peaks) > 0)                       # centres increase
    assert np.all(np.diff(np.diff(peaks)) >= -1)             # and spread out (mel spacing)
    with pytest.raises(ValueError, match="fmin"):
        mel_filterbank(16000, 512, 40, 9000.0, None)


def test_log_mel_of_a_tone_peaks_in_its_band():
    sr = 16000
    for freq in (300.0, 1000.0, 4000.0):
        x = np.sin(2 * np.pi * freq * np.arange(sr // 2) / sr)
        feats = log_mel(x, sr)
        fb = mel_filterbank(sr, 512, 40, 60.0, None)
        band = np.argmax(fb[:, round(freq / (sr / 512))])
        assert abs(int(np.bincount(feats.argmax(1)).argmax()) - band) <= 1
        assert feats.shape == (1 + (sr // 2 - 400) // 160, 40)


def test_mfcc_is_dct_of_log_mel_with_regression_deltas():
    x = np.random.default_rng(0).standard_normal(8000)
    m = mfcc(x, 16000, cmn=False)
    c = dct(log_mel(x, 16000).astype(np.float64), type=2, norm="ortho", axis=1)[:, :13]
    np.testing.assert_allclose(m[:, :13], c, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(m[:, 13:26], deltas(c), rtol=1e-4, atol=1e-3)
    assert m.shape == (48, 39)
    assert np.abs(mfcc(x, 16000)[:, :13].mean(0)).max() < 1e-4     # CMN


def test_deltas_of_a_ramp_are_its_slope():
    ramp = np.arange(20, dtype=np.float64)[:, None] * np.array([[2.0, -1.0]])
    np.testing.assert_allclose(deltas(ramp)[3:-3], np.tile([[2.0, -1.0]], (14, 1)))


@pytest.mark.parametrize("audio, sr, match", [
    (np.ones(16000), 22050, "sample-rate mismatch"),
    (np.zeros(0), 16000, "empty"),
    (np.zeros(16000), 16000, "silent"),
    (np.ones(100), 16000, "too short"),
    (np.ones((2, 16000)), 16000, "1-D"),
])
def test_bad_audio(audio, sr, match):
    with pytest.raises(ValueError, match=match):
        log_mel(audio, sr)


def test_config_sample_rate_follows_user():
    x = np.random.default_rng(1).standard_normal(22050)
    assert log_mel(x, 22050, FeatureConfig(sample_rate=22050)).shape[0] == 98
    with pytest.raises(TypeError, match="sample_rate"):
        log_mel(x, 22050.0, FeatureConfig(sample_rate=22050))
