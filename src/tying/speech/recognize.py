"""Isolated-word recognition: features for a corpus, accuracy, and hmmlearn models as peers.

`from_hmmlearn` turns per-word hmmlearn models (the unshared peer system) into one `PhoneHMMs`
whose units are the words' own states, so the batched scorer ranks them; with ``end="any"`` its
log-likelihoods are hmmlearn's ``score`` (tests/test_speech_hmm.py checks this to 1e-6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .corpus import Utterance, add_noise, noise_rng
from .features import FeatureConfig, log_mel, mfcc
from .hmm import PhoneHMMs
from .lexicon import Lexicon

__all__ = ["accuracy", "featurize", "from_hmmlearn", "recognize"]


def featurize(utterances: Sequence[Utterance], *, kind: str = "mfcc", snr_db: float | None = None,
              seed: int = 0, config: FeatureConfig | None = None) -> list[np.ndarray]:
    """Features of each utterance after adding white noise at ``snr_db`` (None: clean).

    ``kind`` is ``mfcc`` (13 + Δ + ΔΔ = 39 dims) or ``logmel`` (``config.n_mels`` dims). The
    noise is seeded per (utterance, snr, seed), so repeated calls give the same features.
    """
    if kind not in ("mfcc", "logmel"):
        raise ValueError(f"kind must be 'mfcc' or 'logmel', got {kind!r}")
    fn = mfcc if kind == "mfcc" else log_mel
    config = FeatureConfig() if config is None else config
    out = []
    for u in utterances:
        audio = add_noise(u.audio, snr_db, noise_rng(u, snr_db, seed))
        out.append(fn(audio, u.sample_rate, config))
    return out


def recognize(model: PhoneHMMs, features: Sequence, lexicon: Lexicon,
              words: Sequence[str] | None = None) -> list[str]:
    """The most likely word of ``words`` (default: all of ``lexicon``) for each utterance.

    Example:
        >>> recognize(model, feats, lexicon, ["cat", "dog"])  # doctest: +SKIP
        ['dog', 'cat']
    """
    return model.predict(features, lexicon, words)


def accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Fraction of equal entries.

    >>> accuracy(["a", "b"], ["a", "c"])
    0.5
    """
    if len(predicted) != len(truth):
        raise ValueError(f"predicted and truth differ in length: {len(predicted)} vs {len(truth)}")
    if not truth:
        raise ValueError("nothing to score: truth is empty")
    return float(np.mean([p == t for p, t in zip(predicted, truth)]))


def from_hmmlearn(models: Mapping[str, object], *, dtype=torch.float64
                  ) -> tuple[PhoneHMMs, Lexicon]:
    """Per-word left-to-right hmmlearn models (GaussianHMM or GMMHMM, diagonal covariances,
    start in state 0) as one `PhoneHMMs` with ``end="any"`` plus its (unshared) lexicon.

    Raises:
        ValueError: a model is not left-to-right (a transition other than stay/advance), does
            not start in state 0, or has no diagonal covariances.
    """
    if not models:
        raise ValueError("models is empty: give word -> fitted hmmlearn model")
    means, variances, weights, stays, units, entries = [], [], [], [], [], {}
    n_mix = None
    for word, m in models.items():
        if getattr(m, "covariance_type", None) != "diag":
            raise ValueError(f"model {word!r}: covariance_type must be 'diag'")
        A = np.asarray(m.transmat_)
        n = A.shape[0]
        band = np.eye(n, dtype=bool) | np.eye(n, k=1, dtype=bool)
        if np.any(A[~band] > 0) or not np.isclose(m.startprob_[0], 1.0):
            raise ValueError(f"model {word!r} is not left-to-right from state 0")
        if hasattr(m, "weights_"):                                   # GMMHMM: (N, M, D)
            mu, cov, w = np.asarray(m.means_), np.asarray(m.covars_), np.asarray(m.weights_)
        else:                                                         # GaussianHMM: (N, D)
            mu, cov, w = (np.asarray(m.means_)[:, None], np.asarray(m._covars_)[:, None],
                          np.ones((n, 1)))
        if n_mix is None:
            n_mix = mu.shape[1]
        elif mu.shape[1] != n_mix:
            raise ValueError("all models must have the same number of mixture components")
        means.append(mu)
        variances.append(cov)
        weights.append(w)
        stays.append(np.diag(A))
        names = [f"{word}/{i}" for i in range(n)]
        units.extend(names)
        entries[word] = names
    hmm = PhoneHMMs(n_states=1, n_mix=n_mix, dtype=dtype, end="any")
    hmm.units_ = tuple(units)
    hmm.unit_index_ = {u: i for i, u in enumerate(units)}
    hmm.means_ = torch.as_tensor(np.concatenate(means), dtype=dtype)
    hmm.vars_ = torch.as_tensor(np.concatenate(variances), dtype=dtype)
    with np.errstate(divide="ignore"):
        hmm.log_weights_ = torch.as_tensor(np.log(np.concatenate(weights)), dtype=dtype)
        hmm.log_stay_ = torch.as_tensor(np.log(np.concatenate(stays)), dtype=dtype)
    return hmm, Lexicon(entries, silence=False)
