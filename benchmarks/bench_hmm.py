"""Benchmark: tying's batched left-to-right HMM forward and Baum-Welch vs. hmmlearn.

Two measurements, each compared IN THE SAME RUN, interleaved, medians over rounds:

1. scoring: the log-likelihood of every utterance under every word model — 20 word models of
   9 states (3 phones x 3), 39-dim diagonal Gaussians, 500 utterances of 60 frames. hmmlearn:
   10,000 ``GaussianHMM.score`` calls (the issue measured ~320 us each here); tying: one
   batched ``PhoneHMMs.score`` (float64, and float32): emissions of all states from one
   matrix product per few frames, then a scaled forward in probability space, renormalized
   every frame (exact in log-likelihood; see ``PhoneHMMs._forward_scores``). Equal
   log-likelihoods are checked (max |difference| in float64). Goal: >= 30x faster.
2. training: the 20 word models by Baum-Welch (10 iterations, 25 utterances each, the same
   uniform-segmentation start): hmmlearn fits one model at a time, tying all 20 in one batched
   embedded Baum-Welch. Both run the same algorithm, so the likelihood after each iteration is
   compared as well as the time.

Usage: ``.venv/bin/python benchmarks/bench_hmm.py [--rounds N] [--threads T]``; writes
benchmarks/results/bench_hmm.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from common import machine
from tying.speech.hmm import PhoneHMMs
from tying.speech.lexicon import Lexicon
from tying.speech.recognize import from_hmmlearn

N_WORDS, N_STATES, DIM, N_UTT, T = 20, 9, 39, 500, 60
GOAL = 30.0


def make_models(rng):
    from hmmlearn import hmm

    models = {}
    for w in range(N_WORDS):
        m = hmm.GaussianHMM(N_STATES, covariance_type="diag", init_params="", params="")
        stay = rng.uniform(0.5, 0.85, N_STATES)
        A = np.diag(stay) + np.diag(1 - stay[:-1], 1)
        A[-1, -1] = 1.0
        m.startprob_, m.transmat_ = np.eye(N_STATES)[0], A
        m.means_ = rng.normal(0, 1.0, (N_STATES, DIM))
        m.covars_ = rng.uniform(0.5, 1.5, (N_STATES, DIM))
        models[f"w{w:02d}"] = m
    return models


def sample(models, n, rng):
    """n utterances of T frames, word i drawn round-robin (hmmlearn's own sampler)."""
    words = list(models)
    xs, ys = [], []
    for i in range(n):
        w = words[i % len(words)]
        x, _ = models[w].sample(T, random_state=int(rng.integers(2**31)))
        xs.append(x)
        ys.append(w)
    return xs, ys


def time_it(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fit_hmmlearn(xs, ys, n_iter):
    from hmmlearn import hmm

    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    out = {}
    for w in sorted(set(ys)):
        data = [x for x, y in zip(xs, ys) if y == w]
        X = np.concatenate(data)
        seg = np.concatenate([(np.arange(len(x)) * N_STATES) // len(x) for x in data])
        m = hmm.GaussianHMM(N_STATES, covariance_type="diag", n_iter=n_iter, tol=-np.inf,
                            init_params="", params="tmc", covars_prior=0.0)
        m.startprob_ = np.eye(N_STATES)[0]
        m.transmat_ = np.diag(np.full(N_STATES, 0.6)) + np.diag(np.full(N_STATES - 1, 0.4), 1)
        m.transmat_[-1, -1] = 1.0
        m.means_ = np.stack([X[seg == k].mean(0) for k in range(N_STATES)])
        m.covars_ = np.stack([X[seg == k].var(0) for k in range(N_STATES)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(X, [len(x) for x in data])
        out[w] = m
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)  # hmmlearn uses one core too
    ap.add_argument("--out", default="benchmarks/results/bench_hmm.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    models = make_models(rng)
    words = list(models)
    xs, _ = sample(models, N_UTT, rng)
    peer64, lex = from_hmmlearn(models, dtype=torch.float64)
    peer32, _ = from_hmmlearn(models, dtype=torch.float32)

    # ---- 1. scoring, interleaved rounds
    t_ref, t64, t32 = [], [], []
    ref = s64 = s32 = None
    for _ in range(args.rounds):
        dt, ref = time_it(lambda: np.array([[models[w].score(x) for w in words] for x in xs]))
        t_ref.append(dt)
        dt, s64 = time_it(lambda: peer64.score(xs, lex, words))
        t64.append(dt)
        dt, s32 = time_it(lambda: peer32.score(xs, lex, words))
        t32.append(dt)
    med_ref, med64, med32 = map(statistics.median, (t_ref, t64, t32))
    diff64 = float(np.abs(s64 - ref).max())
    rel32 = float(np.abs((s32 - ref) / ref).max())
    same_argmax = float(np.mean(s32.argmax(1) == ref.argmax(1)))

    # ---- 2. training: 25 utterances per word, 10 Baum-Welch iterations
    n_iter = 10
    txs, tys = sample(models, 25 * N_WORDS, np.random.default_rng(1))
    unit_lex = Lexicon({w: [f"{w}/{k}" for k in range(N_STATES)] for w in words}, silence=False)
    tr_ref, tr_ours = [], []
    fitted = ours = None
    for _ in range(max(1, args.rounds - 1)):
        dt, fitted = time_it(lambda: fit_hmmlearn(txs, tys, n_iter))
        tr_ref.append(dt)
        dt, ours = time_it(lambda: PhoneHMMs(n_states=1, n_mix=1, n_iter=n_iter, var_floor=1e-9,
                                             dtype=torch.float64, end="any", batch_size=512
                                             ).fit(txs, tys, unit_lex))
        tr_ours.append(dt)
    frames = sum(len(x) for x in txs)
    ref_hist = np.sum([np.array(fitted[w].monitor_.history) for w in words], 0) / frames
    ours_hist = np.array(ours.history_)
    final_ref = float(np.sum([fitted[w].score(np.concatenate([x for x, y in zip(txs, tys)
                                                               if y == w]),
                                              [T] * 25) for w in words]) / frames)
    final_ours = float(np.sum(ours.score(txs, unit_lex, words)[np.arange(len(txs)),
                                                                [words.index(y) for y in tys]])
                       / frames)
    med_tr_ref, med_tr_ours = statistics.median(tr_ref), statistics.median(tr_ours)

    speed64, speed32 = med_ref / med64, med_ref / med32
    rows = [
        ("hmmlearn score x 10,000", med_ref, 1.0),
        ("tying batched, float64", med64, speed64),
        ("tying batched, float32", med32, speed32),
        ("hmmlearn Baum-Welch, 20 fits", med_tr_ref, 1.0),
        ("tying embedded Baum-Welch", med_tr_ours, med_tr_ref / med_tr_ours),
    ]
    print(f"{'what':34s} {'median s':>10s} {'speed-up':>9s}")
    for name, sec, sp in rows:
        print(f"{name:34s} {sec:10.4f} {sp:8.1f}x")
    print(f"per score call: hmmlearn {med_ref / (N_WORDS * N_UTT) * 1e6:.0f} us; "
          f"max |ll64 - hmmlearn| = {diff64:.2e}; float32 max rel. diff {rel32:.1e}, "
          f"same best word {same_argmax:.3f}")
    print(f"training mean ll/frame per iteration, hmmlearn vs tying: max |diff| "
          f"{np.abs(ref_hist - ours_hist).max():.2e}; final {final_ref:.6f} vs {final_ours:.6f}")
    result = {
        "benchmark": "bench_hmm",
        "machine": {**machine(), "hmmlearn": __import__("hmmlearn").__version__},
        "setup": {"word_models": N_WORDS, "states": N_STATES, "dim": DIM, "utterances": N_UTT,
                  "frames": T, "rounds": args.rounds},
        "scoring": {"hmmlearn_s": t_ref, "tying_float64_s": t64, "tying_float32_s": t32,
                    "median_hmmlearn_s": med_ref, "median_tying_float64_s": med64,
                    "median_tying_float32_s": med32,
                    "hmmlearn_us_per_score_call": med_ref / (N_WORDS * N_UTT) * 1e6,
                    "speedup_float64": speed64, "speedup_float32": speed32,
                    "max_abs_loglik_diff_float64": diff64, "max_rel_loglik_diff_float32": rel32,
                    "float32_same_best_word": same_argmax},
        "training": {"iterations": n_iter, "utterances": len(txs), "hmmlearn_s": tr_ref,
                     "tying_s": tr_ours, "speedup": med_tr_ref / med_tr_ours,
                     "ll_per_frame_history_hmmlearn": ref_hist.tolist(),
                     "ll_per_frame_history_tying": ours_hist.tolist(),
                     "final_ll_per_frame_hmmlearn": final_ref,
                     "final_ll_per_frame_tying": final_ours},
        "goal": {"speedup_at_equal_loglik": GOAL,
                 "ratio_vs_goal_float64": speed64 / GOAL,
                 "met_float64": bool(speed64 >= GOAL and diff64 < 1e-6),
                 "met_float32": bool(speed32 >= GOAL and same_argmax == 1.0)},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
