"""Log-mel and MFCC features with deltas, in NumPy/SciPy.

Why not librosa: it pulls numba + llvmlite (a JIT whose first call costs seconds, bad for the
seconds-long quick presets) and soundfile/audioread we do not need; torchaudio must match the
exact torch build and its DSP parts are in maintenance mode. The pipeline here is the textbook
one (pre-emphasis, Hamming window, power spectrum, HTK mel filterbank, log, DCT-II ortho,
regression deltas) in ~100 lines on scipy.fft, and the tests check it against its definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.fft import dct, rfft

__all__ = ["FeatureConfig", "deltas", "log_mel", "mel_filterbank", "mfcc", "vtlp_warp"]


@dataclass(frozen=True)
class FeatureConfig:
    """Framing and filterbank settings.

    Attributes:
        sample_rate: the rate the audio must have (a mismatch raises; resample first).
        win_ms: analysis window (25 ms: a few pitch periods).
        hop_ms: frame shift (10 ms, as in Waibel et al. 1989).
        n_mels: mel bands.
        n_fft: FFT size (zero-padded window).
        fmin, fmax: filterbank range in Hz (fmax=None: Nyquist).
        preemphasis: first-order high-pass coefficient (flattens the spectral tilt).
    """

    sample_rate: int = 16000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_mels: int = 40
    n_fft: int = 512
    fmin: float = 60.0
    fmax: float | None = None
    preemphasis: float = 0.97

    @property
    def win(self) -> int:
        return round(self.sample_rate * self.win_ms / 1000)

    @property
    def hop(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000)


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def vtlp_warp(freqs, alpha: float, sample_rate: int, f_hi: float = 4800.0) -> np.ndarray:
    """Jaitly & Hinton (2013)'s piecewise-linear vocal-tract-length warp of frequencies in Hz.

    ``f -> alpha * f`` up to a boundary ``f_hi * min(alpha, 1) / alpha``, then a straight line to
    the Nyquist frequency, which stays put (so the warped axis still spans 0..Nyquist). ``alpha``
    above 1 moves energy up (a shorter vocal tract), below 1 down.

    Raises:
        ValueError: ``alpha`` outside the range where the warp is monotone
            (``f_hi / nyquist < alpha``), or ``f_hi`` not inside (0, Nyquist).

    Example:
        >>> vtlp_warp([0.0, 1000.0, 8000.0], 1.1, 16000).round(1).tolist()
        [0.0, 1100.0, 8000.0]
    """
    nyquist = sample_rate / 2
    freqs = np.asarray(freqs, dtype=np.float64)
    if not 0 < f_hi < nyquist:
        raise ValueError(f"f_hi must be in (0, {nyquist}) Hz, got {f_hi}")
    if not alpha > f_hi / nyquist:
        raise ValueError(f"warp alpha must be > f_hi / nyquist = {f_hi / nyquist:.3f} (VTLP uses "
                         f"about 0.9..1.1), got {alpha}")
    if alpha == 1.0:
        return freqs.copy()
    knee = f_hi * min(alpha, 1.0) / alpha
    upper = nyquist - (nyquist - f_hi * min(alpha, 1.0)) / (nyquist - knee) * (nyquist - freqs)
    return np.where(freqs <= knee, freqs * alpha, upper)


@lru_cache(maxsize=64)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None, warp: float = 1.0) -> np.ndarray:
    """Triangular HTK-mel filters, shape (n_mels, n_fft // 2 + 1), each peaking at 1.

    ``warp`` (default 1: none) applies vocal tract length perturbation (VTLP, Jaitly & Hinton
    2013): each FFT bin's frequency ``f`` is mapped by `vtlp_warp` before the triangles are
    evaluated, so energy at ``f`` lands in the band of ``warp * f`` (below 4.8 kHz).

    Example:
        >>> mel_filterbank(16000, 512, 16, 100.0, 5500.0, warp=1.1).shape
        (16, 257)
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}")
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    if warp != 1.0:
        freqs = vtlp_warp(freqs, float(warp), sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb.setflags(write=False)
    return fb


def _check_audio(audio, sample_rate: int, config: FeatureConfig) -> np.ndarray:
    if not isinstance(sample_rate, (int, np.integer)):
        raise TypeError(f"sample_rate must be an int, got {type(sample_rate).__name__}")
    if sample_rate != config.sample_rate:
        raise ValueError(f"sample-rate mismatch: the audio is at {sample_rate} Hz but the features "
                         f"expect {config.sample_rate} Hz; resample the audio (e.g. "
                         "scipy.signal.resample_poly) or pass FeatureConfig(sample_rate="
                         f"{sample_rate})")
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D (mono samples), got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError("audio is empty (0 samples)")
    if not np.any(audio):
        raise ValueError("audio is silent (all samples are zero): nothing to recognize")
    if audio.size < config.win:
        raise ValueError(f"audio is too short: {audio.size} samples, less than one "
                         f"{config.win_ms} ms window ({config.win} samples)")
    return audio


def log_mel(audio, sample_rate: int, config: FeatureConfig = FeatureConfig(), *,
            floor: float = 1e-10, warp: float = 1.0) -> np.ndarray:
    """Log mel-band energies, shape (frames, n_mels), float32.

    ``warp`` != 1 warps the filterbank's frequency axis (VTLP, see `mel_filterbank`): a
    training-time augmentation that imitates another vocal tract length.

    Raises:
        ValueError: empty, silent or shorter-than-a-window audio; a sample-rate mismatch.

    Example:
        >>> x = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
        >>> log_mel(x, 16000).shape
        (98, 40)
    """
    x = _check_audio(audio, sample_rate, config)
    if config.preemphasis:
        x = np.append(x[0], x[1:] - config.preemphasis * x[:-1])
    win, hop = config.win, config.hop
    n = 1 + (x.size - win) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n] * np.hamming(win)
    power = np.abs(rfft(frames, n=config.n_fft, axis=1)) ** 2
    fb = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax,
                        warp)
    return np.log(power @ fb.T + floor).astype(np.float32)


def deltas(feats: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over ±``width`` frames (HTK formula, edges repeated)."""
    feats = np.asarray(feats)
    pad = np.pad(feats, ((width, width), (0, 0)), mode="edge")
    num = sum(k * (pad[width + k: width + k + len(feats)] - pad[width - k: width - k + len(feats)])
              for k in range(1, width + 1))
    return (num / (2 * sum(k * k for k in range(1, width + 1)))).astype(feats.dtype)


def mfcc(audio, sample_rate: int, config: FeatureConfig = FeatureConfig(), *, n_ceps: int = 13,
         delta_order: int = 2, cmn: bool = True) -> np.ndarray:
    """MFCCs (c0..c{n_ceps-1}) with deltas: shape (frames, n_ceps * (1 + delta_order)).

    ``cmn`` subtracts the utterance mean of the static coefficients (cepstral mean
    normalization: removes the channel/voice tilt).

    Example:
        >>> x = np.random.default_rng(0).standard_normal(8000)
        >>> mfcc(x, 16000).shape
        (48, 39)
    """
    if not 1 <= n_ceps <= config.n_mels:
        raise ValueError(f"n_ceps must be in 1..n_mels={config.n_mels}, got {n_ceps}")
    c = dct(log_mel(audio, sample_rate, config).astype(np.float64), type=2, norm="ortho",
            axis=1)[:, :n_ceps]
    if cmn:
        c = c - c.mean(0, keepdims=True)
    out = [c]
    for _ in range(delta_order):
        out.append(deltas(out[-1]))
    return np.concatenate(out, axis=1).astype(np.float32)
