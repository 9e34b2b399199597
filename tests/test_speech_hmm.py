"""tying.speech.hmm: the batched forward/Viterbi against hmmlearn, Baum-Welch, sharing, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tying.speech.hmm import (
    PhoneHMMs,
    diag_gmm_logprob,
    forward_dense,
    forward_l2r,
    pad_features,
    viterbi_dense,
    viterbi_l2r,
)
from tying.speech.lexicon import Lexicon
from tying.speech.recognize import from_hmmlearn

hmm = pytest.importorskip("hmmlearn.hmm")


def _l2r_gaussian_hmm(rng, n, d):
    m = hmm.GaussianHMM(n, covariance_type="diag", init_params="", params="")
    A = np.zeros((n, n))
    for i in range(n):
        a = rng.uniform(0.3, 0.9) if i + 1 < n else 1.0
        A[i, i] = a
        if i + 1 < n:
            A[i, i + 1] = 1 - a
    m.startprob_ = np.eye(n)[0]
    m.transmat_ = A
    m.means_ = rng.normal(0, 1, (n, d))
    m.covars_ = rng.uniform(0.3, 2.0, (n, d))
    return m


def _log(a):
    with np.errstate(divide="ignore"):
        return torch.tensor(np.log(a))


def _emissions(m, X):
    x, lengths = pad_features(X)
    B, T, D = x.shape
    comp = diag_gmm_logprob(x.reshape(-1, D), torch.tensor(m.means_)[:, None],
                            torch.tensor(m._covars_)[:, None])
    return comp.reshape(B, T, -1), lengths


def test_forward_l2r_equals_hmmlearn_score_float64():
    rng = np.random.default_rng(0)
    m = _l2r_gaussian_hmm(rng, 9, 39)
    X = [rng.normal(0, 1.2, (t, 39)) for t in (60, 41, 77, 9)]
    log_b, lengths = _emissions(m, X)
    lA = _log(m.transmat_)
    stay = torch.diagonal(lA)[None]
    nxt = torch.cat([torch.diagonal(lA, 1), torch.tensor([-np.inf], dtype=torch.float64)])[None]
    ours = forward_l2r(log_b[:, :, None], stay, nxt, lengths, torch.tensor([8]), end="any")
    ref = np.array([m.score(x) for x in X])
    np.testing.assert_allclose(ours[:, 0].numpy(), ref, rtol=0, atol=1e-6)
    dense = forward_dense(log_b, _log(m.startprob_), lA, lengths)
    np.testing.assert_allclose(dense.numpy(), ref, rtol=0, atol=1e-6)


def test_viterbi_equals_hmmlearn_decode():
    rng = np.random.default_rng(1)
    m = _l2r_gaussian_hmm(rng, 6, 5)
    X = [rng.normal(0, 1.5, (t, 5)) for t in (30, 18, 25)]
    log_b, lengths = _emissions(m, X)
    lA = _log(m.transmat_)
    stay = torch.diagonal(lA)[None]
    nxt = torch.cat([torch.diagonal(lA, 1), torch.tensor([-np.inf], dtype=torch.float64)])[None]
    score, path = viterbi_l2r(log_b[:, :, None], stay, nxt, lengths, torch.tensor([5]),
                              end="any", return_path=True)
    dscore, dpath = viterbi_dense(log_b, _log(m.startprob_), lA, lengths)
    for i, x in enumerate(X):
        ref_lp, ref_states = m.decode(x, algorithm="viterbi")
        assert abs(score[i, 0].item() - ref_lp) < 1e-6
        assert abs(dscore[i].item() - ref_lp) < 1e-6
        np.testing.assert_array_equal(path[i, 0, : len(x)].numpy(), ref_states)
        np.testing.assert_array_equal(dpath[i, : len(x)].numpy(), ref_states)
        assert (path[i, 0, len(x):] == -1).all()


def test_forward_dense_ergodic_equals_hmmlearn():
    rng = np.random.default_rng(2)
    n, d = 4, 3
    m = hmm.GaussianHMM(n, covariance_type="diag", init_params="", params="")
    m.startprob_ = rng.dirichlet(np.ones(n))
    m.transmat_ = rng.dirichlet(np.ones(n), size=n)
    m.means_ = rng.normal(0, 2, (n, d))
    m.covars_ = rng.uniform(0.5, 1.5, (n, d))
    X = [rng.normal(0, 2, (t, d)) for t in (12, 20)]
    log_b, lengths = _emissions(m, X)
    ours = forward_dense(log_b, _log(m.startprob_), _log(m.transmat_), lengths)
    np.testing.assert_allclose(ours.numpy(), [m.score(x) for x in X], rtol=0, atol=1e-6)


def test_batched_scoring_of_many_word_models_equals_hmmlearn():
    """Padding masks: models of different sizes and GMM emissions, all pairs at once."""
    rng = np.random.default_rng(3)
    d, models = 4, {}
    for word, n in (("a", 3), ("bb", 6), ("ccc", 9)):
        m = hmm.GMMHMM(n, n_mix=2, covariance_type="diag", init_params="", params="")
        base = _l2r_gaussian_hmm(rng, n, d)
        m.startprob_, m.transmat_ = base.startprob_, base.transmat_
        m.means_ = rng.normal(0, 1, (n, 2, d))
        m.covars_ = rng.uniform(0.5, 1.5, (n, 2, d))
        m.weights_ = rng.dirichlet(np.ones(2), size=n)
        models[word] = m
    X = [rng.normal(0, 1, (t, d)) for t in (15, 9, 22, 12)]
    peer, lex = from_hmmlearn(models)
    ours = peer.score(X, lex, ["a", "bb", "ccc"])
    ref = np.array([[models[w].score(x) for w in ("a", "bb", "ccc")] for x in X])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    best = peer.score(X, lex, ["a", "bb", "ccc"], algorithm="viterbi")
    ref = np.array([[models[w].decode(x)[0] for w in ("a", "bb", "ccc")] for x in X])
    np.testing.assert_allclose(best, ref, rtol=0, atol=1e-6)


def _toy(rng, spec, n=4):
    """Utterances of words over phones 'a' (mean -3), 'b' (0), 'c' (+3); 6 frames per phone."""
    centres = {"a": -3.0, "b": 0.0, "c": 3.0}
    feats, words = [], []
    for word in spec:
        for _ in range(n):
            feats.append(np.concatenate([rng.normal(centres[p], 0.5, (6, 2)) for p in word]))
            words.append(word)
    return feats, words


def test_baum_welch_increases_likelihood_and_shares_phones():
    rng = np.random.default_rng(4)
    lex = Lexicon({w: tuple(w) for w in ("ab", "bc", "ca", "abc", "cab")}, silence=False)
    feats, words = _toy(rng, ["ab", "bc", "ca"])
    model = PhoneHMMs(n_mix=1, n_iter=6, dtype=torch.float64).fit(feats, words, lex)
    hist = np.array(model.history_)
    assert np.all(np.diff(hist) > -1e-6), hist
    assert model.units_ == ("a", "b", "c")
    # Words that share a phone point at the same parameters.
    table, _ = model.word_states(lex, ["ab", "ca"])
    assert set(table[0, :3].tolist()) == set(table[1, 3:6].tolist())
    # Words never trained ("abc", "cab") get models from their phones and are recognized.
    test, truth = _toy(rng, ["abc", "cab", "ab"], n=3)
    assert model.predict(test, lex) == truth


def test_unshared_lexicon_has_more_parameters_and_no_unseen_words():
    rng = np.random.default_rng(5)
    lex = Lexicon({w: tuple(w) for w in ("ab", "ba", "aab")}, silence=False)
    feats, words = _toy(rng, ["ab", "ba"])
    shared = PhoneHMMs(n_mix=1, n_iter=2).fit(feats, words, lex)
    whole = PhoneHMMs(n_mix=1, n_iter=2).fit(feats, words, lex.unshared())
    assert whole.n_parameters() == 2 * shared.n_parameters()
    with pytest.raises(ValueError, match=r"aab/0"):
        whole.score(feats[:1], lex.unshared(), ["aab"])


def test_bad_input_errors():
    rng = np.random.default_rng(6)
    lex = Lexicon({"ab": ("a", "b"), "bz": ("b", "z")}, silence=False)
    feats, words = _toy(rng, ["ab"], n=2)
    model = PhoneHMMs(n_mix=1, n_iter=1).fit(feats, words, lex)
    with pytest.raises(ValueError, match=r"'bz' uses the phone 'z'"):
        model.score(feats, lex, ["bz"])
    with pytest.raises(ValueError, match="too short"):
        model.score([rng.normal(size=(3, 2))], lex, ["ab"])
    with pytest.raises(ValueError, match="fewer than the 6 states"):
        PhoneHMMs(n_iter=1).fit([rng.normal(size=(4, 2))], ["ab"], lex)
    with pytest.raises(ValueError, match="dimensions"):
        model.score([rng.normal(size=(20, 3))], lex, ["ab"])
    with pytest.raises(ValueError, match="0 frames"):
        model.score([np.zeros((0, 2))], lex, ["ab"])
    with pytest.raises(ValueError, match="empty"):
        Lexicon({})
    with pytest.raises(RuntimeError, match="not fitted"):
        PhoneHMMs().score(feats, lex)
    with pytest.raises(ValueError, match="same length"):
        PhoneHMMs().fit(feats, words[:1], lex)


def _log_space_scores(model, feats, lex, words):
    """The reference: full (B, T, K, N) emissions and the log-space `forward_l2r`."""
    table, counts = model.word_states(lex, words)
    stay, nxt = model._transitions(table, counts)
    x, lengths = pad_features(feats, dtype=model.dtype)
    safe = table.clamp(max=model.means_.shape[0] - 1).flatten()
    frame = model._frame_logb(x).index_select(2, safe)
    log_b = frame.view(*frame.shape[:2], *table.shape)
    return forward_l2r(log_b, stay, nxt, lengths, counts - 1, end=model.end).double().numpy()


@pytest.mark.parametrize("end", ["final", "any"])
def test_streaming_score_equals_forward_l2r(end):
    """score() streams emissions over time into an in-place recursion; it must equal
    `forward_l2r` on the full emission block: shared states, mixtures, ragged lengths, frames
    ~1000 nats from some models, words longer than the utterance."""
    rng = np.random.default_rng(7)
    lex = Lexicon({w: tuple(w) for w in ("ab", "bc", "ca", "abc", "cab", "abcabc")},
                  silence=False)
    feats, words = _toy(rng, ["ab", "bc", "ca"])
    model = PhoneHMMs(n_mix=2, n_iter=3, dtype=torch.float64, end=end).fit(feats, words, lex)
    test, _ = _toy(rng, ["abc", "cab", "ab", "bc"], n=2)
    test = [f[: len(f) - i % 4] for i, f in enumerate(test)]                # ragged
    # Frames ~1000 nats from every state of some models (a scaled forward would underflow),
    # and "abcabc" (18 states) is longer than the utterances under 18 frames (-inf).
    test.append(np.r_[rng.normal(-3, 0.5, (6, 2)), np.full((6, 2), 60.0)])
    vocab = list(lex)
    ours = model.score(test, lex, vocab)
    ref = _log_space_scores(model, test, lex, vocab)
    short = np.array([len(f) < 18 for f in test])
    assert short.sum() >= 3
    if end == "final":                                    # "any" may stop mid-word
        assert np.isneginf(ref[short, vocab.index("abcabc")]).all()
    finite = np.isfinite(ref)
    assert finite.sum() >= 4 * len(test)
    np.testing.assert_array_equal(np.isfinite(ours), finite)
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-9, atol=1e-6)
    assert ours[-1, finite[-1]].max() < -1000                               # the far frames
    m32 = PhoneHMMs(n_mix=2, n_iter=3, dtype=torch.float32, end=end).fit(feats, words, lex)
    s32 = m32.score(test, lex, vocab)
    np.testing.assert_allclose(s32[finite], _log_space_scores(m32, test, lex, vocab)[finite],
                               rtol=1e-5)


def test_gradient_training_raises_likelihood_and_recognizes_unseen_words():
    """fit_gradient: Adam on the forward log-likelihood (autograd through the recursion)."""
    rng = np.random.default_rng(8)
    lex = Lexicon({w: tuple(w) for w in ("ab", "bc", "ca", "abc", "cab")}, silence=False)
    feats, words = _toy(rng, ["ab", "bc", "ca"])
    model = PhoneHMMs(n_mix=2, dtype=torch.float64, batch_size=6).fit_gradient(
        feats, words, lex, epochs=15, lr=0.05)
    hist = np.array(model.history_)
    assert len(hist) == 15 and hist[-1] > hist[0] + 0.05, hist
    # The objective is the forward log-likelihood that score() computes.
    own = model.score(feats, lex, sorted(set(words)))
    mean_ll = own[np.arange(len(words)), [sorted(set(words)).index(w) for w in words]].sum()
    assert mean_ll / sum(len(f) for f in feats) > hist[-1] - 0.05
    bw = PhoneHMMs(n_mix=2, n_iter=6, dtype=torch.float64).fit(feats, words, lex)
    assert hist[-1] > bw.history_[1]              # past Baum-Welch's second iteration
    assert not any(p.requires_grad for p in (model.means_, model.vars_, model.log_stay_))
    test, truth = _toy(rng, ["abc", "cab", "ab"], n=3)
    assert model.predict(test, lex) == truth
    with pytest.raises(ValueError, match="epochs"):
        PhoneHMMs().fit_gradient(feats, words, lex, epochs=0)
