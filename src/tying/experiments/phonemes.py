"""`phonemes`: word models as concatenations of shared phone HMMs vs. whole-word HMMs.

Seed: "in speech recognition, word models are concatenations of phoneme models, hence words
sharing the same phoneme will also share the same corresponding parameters". Measured on an
espeak-ng corpus split by speaker (test voices are never heard in training): parameters of the
two model families, accuracy on seen words by unseen speakers against the number of training
examples per word, and accuracy on words never seen in training (only sharing can do that).
The unshared peer is hmmlearn's GMMHMM, one per word, with the same topology.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch

from ..speech.corpus import WORDS, make_speakers, synthesize_corpus
from ..speech.hmm import PhoneHMMs
from ..speech.lexicon import Lexicon
from ..speech.recognize import accuracy, featurize, from_hmmlearn
from ..system import require_espeak
from .registry import register_experiment
from .runner import seed_everything

PRESETS = {
    "quick": {"n_words": 40, "n_unseen": 20, "n_train_speakers": 3, "n_test_speakers": 2,
              "examples": [1, 3], "hmmlearn_examples": [1], "n_mix": 2, "n_iter": 5,
              "snr_db": 30.0, "pad_ms": 60.0},
    "full": {"n_words": 150, "n_unseen": 30, "n_train_speakers": 10, "n_test_speakers": 4,
             "examples": [1, 2, 4, 8], "hmmlearn_examples": [1, 2, 4], "n_mix": 2, "n_iter": 8,
             "snr_db": 30.0, "pad_ms": 60.0},
}


def choose_unseen(lexicon: Lexicon, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` words to hold out whose every phone stays covered by the remaining words."""
    count: dict[str, int] = {}
    for w in lexicon:
        for p in set(lexicon[w]):
            count[p] = count.get(p, 0) + 1
    unseen = []
    for w in rng.permutation(list(lexicon)):
        if len(unseen) == n:
            break
        phones = set(lexicon[w])
        if all(count[p] >= 2 for p in phones):
            unseen.append(str(w))
            for p in phones:
                count[p] -= 1
    if len(unseen) < n:
        raise ValueError(f"only {len(unseen)} words can be held out with their phones covered; "
                         f"lower n_unseen (asked {n}) or raise n_words")
    return unseen


def _fit_hmmlearn(feats, words, lexicon, n_iter, var_floor=0.01):
    """One hmmlearn GaussianHMM per word: same states, left-to-right, same uniform-segmentation
    start as tying's models (k-means would scramble the left-to-right order of the states)."""
    from hmmlearn import hmm

    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    floor = var_floor * np.concatenate(feats).var(0)
    models = {}
    for w in sorted(set(words)):
        xs = [f for f, ww in zip(feats, words) if ww == w]
        n = len(lexicon[w]) * 3
        seg = [np.minimum((np.arange(len(x)) * n) // len(x), n - 1) for x in xs]
        X, S = np.concatenate(xs), np.concatenate(seg)
        means = np.stack([X[S == k].mean(0) for k in range(n)])
        covars = np.stack([np.maximum(X[S == k].var(0), floor) for k in range(n)])
        m = hmm.GaussianHMM(n_components=n, covariance_type="diag", n_iter=n_iter,
                            init_params="", params="tmc", min_covar=float(floor.min()))
        m.startprob_ = np.eye(n)[0]
        A = np.eye(n) * 0.6 + np.eye(n, k=1) * 0.4
        A[-1, -1] = 1.0
        m.transmat_, m.means_, m.covars_ = A, means, covars
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(X, [len(x) for x in xs])
        models[w] = m
    return models


@register_experiment(
    "phonemes",
    description="Word models as concatenations of shared phone HMMs vs. whole-word HMMs "
                "(hmmlearn peer): parameters, seen words by unseen speakers, unseen words.",
    presets=PRESETS, default_seeds={"quick": 1, "full": 3}, needs=("espeak-ng",))
def run(ctx):
    require_espeak("The phonemes experiment")
    cfg = ctx.config
    return _run(ctx, cfg)


def _run(ctx, cfg):
    rng = np.random.default_rng(0)
    vocab = sorted(rng.choice(WORDS, size=cfg["n_words"], replace=False).tolist())
    lexicon = Lexicon.from_espeak(vocab)
    unseen = sorted(choose_unseen(lexicon, cfg["n_unseen"], rng))
    seen = [w for w in vocab if w not in set(unseen)]
    n_spk = cfg["n_train_speakers"] + cfg["n_test_speakers"]
    speakers = make_speakers(n_spk, seed=0)
    train_spk, test_spk = speakers[: cfg["n_train_speakers"]], speakers[cfg["n_train_speakers"]:]
    utts = synthesize_corpus(vocab, speakers, pad_ms=cfg["pad_ms"],
                             progress=lambda it, d: ctx.progress(it, d))
    feats = featurize(ctx.progress(utts, "features"), snr_db=cfg["snr_db"], seed=0)
    test_seen = [i for i, u in enumerate(utts) if u.speaker in test_spk and u.text in set(seen)]
    test_unseen = [i for i, u in enumerate(utts)
                   if u.speaker in test_spk and u.text in set(unseen)]
    by_word_spk = {(u.text, u.speaker): i for i, u in enumerate(utts)}
    unshared = lexicon.unshared()

    def evaluate(model, lex, idx, words):
        pred = model.predict([feats[i] for i in idx], lex, words, algorithm="viterbi")
        return accuracy(pred, [utts[i].text for i in idx])

    peer_ns = [n for n in cfg["hmmlearn_examples"] if n in cfg["examples"]]
    systems = ["shared", "whole-word"] + (["hmmlearn"] if peer_ns else [])
    acc = {(s, n): [] for s in systems for n in cfg["examples"]
           if s != "hmmlearn" or n in peer_ns}
    acc_unseen = {n: [] for n in cfg["examples"]}
    fit_s = {k: [] for k in acc}
    params = {}
    jobs = [(seed, n) for seed in ctx.seeds for n in cfg["examples"]]
    for seed, n in ctx.progress(jobs, "seeds x examples per word"):
        seed_everything(seed)
        pick = np.random.default_rng([seed, n])
        train = [by_word_spk[(w, train_spk[j])] for w in seen
                 for j in pick.choice(len(train_spk), size=n, replace=False)]
        xs, ws = [feats[i] for i in train], [utts[i].text for i in train]
        for name, lex in (("shared", lexicon), ("whole-word", unshared)):
            t0 = time.perf_counter()
            model = PhoneHMMs(n_mix=cfg["n_mix"], n_iter=cfg["n_iter"], seed=seed).fit(xs, ws, lex)
            fit_s[(name, n)].append(time.perf_counter() - t0)
            acc[(name, n)].append(evaluate(model, lex, test_seen, seen))
            params[name] = model.n_parameters(lex.subset(seen))
            if name == "shared":
                acc_unseen[n].append(evaluate(model, lex, test_unseen, vocab))
                params["shared, all words"] = model.n_parameters(lex)
        if n in peer_ns:
            t0 = time.perf_counter()
            models = _fit_hmmlearn(xs, ws, lexicon, cfg["n_iter"])
            fit_s[("hmmlearn", n)].append(time.perf_counter() - t0)
            peer, peer_lex = from_hmmlearn(models, dtype=torch.float32)
            acc[("hmmlearn", n)].append(evaluate(peer, peer_lex, test_seen, seen))

    result = ctx.result()
    n_max, n_min = max(cfg["examples"]), min(cfg["examples"])
    for (s, n), vals in acc.items():
        result.add_metric(f"acc_seen_{s}_n{n}", vals, "fraction")
        result.add_metric(f"fit_seconds_{s}_n{n}", fit_s[(s, n)], "s")
    for n in cfg["examples"]:
        result.add_metric(f"acc_unseen_shared_n{n}", acc_unseen[n], "fraction")
    result.add_metric("params_shared", [params["shared"]], "parameters")
    result.add_metric("params_whole_word", [params["whole-word"]], "parameters")

    rows = []
    for n in cfg["examples"]:
        row = {"examples/word": n}
        for s in systems:
            row[f"{s} seen"] = (f"{np.mean(acc[(s, n)]):.3f} ± {np.std(acc[(s, n)]):.3f}"
                                if (s, n) in acc else "not run")
        row["shared unseen"] = f"{np.mean(acc_unseen[n]):.3f} ± {np.std(acc_unseen[n]):.3f}"
        row["whole-word unseen"] = "impossible (no model)"
        rows.append(row)
    result.add_table("Accuracy on unseen speakers (mean ± std over seeds)", rows)
    result.add_table("Parameters", [
        {"model": f"shared phone HMMs ({len(lexicon.subset(seen).phones)} units for "
                  f"{len(seen)} seen words)", "parameters": params["shared"]},
        {"model": f"whole-word HMMs ({len(seen)} words, same states per word)",
         "parameters": params["whole-word"]},
        {"model": f"shared, covering all {len(vocab)} words incl. {len(unseen)} unseen",
         "parameters": params["shared, all words"]}])
    chance_unseen = 1.0 / len(vocab)
    mean = {k: float(np.mean(v)) for k, v in acc.items()}
    unseen_max = float(np.mean(acc_unseen[n_max]))
    result.add_claim(
        "Phone-shared word models need fewer parameters than whole-word models",
        params["shared"] < params["whole-word"],
        f"{params['shared']:,} vs {params['whole-word']:,} parameters for the same "
        f"{len(seen)} words ({params['whole-word'] / params['shared']:.1f}x)")
    result.add_claim(
        f"Sharing gives a model to {len(unseen)} words never seen in training, recognized far "
        f"above chance (>= 50% among all {len(vocab)} words; chance {chance_unseen:.1%})",
        len(unseen) >= 20 and unseen_max >= 0.5,
        f"unseen-word accuracy {unseen_max:.3f} at {n_max} examples/word of the seen words "
        f"(whole-word models cannot score these words at all)")
    result.add_claim(
        f"With {n_min} example(s) per word, shared phone models beat whole-word models on seen "
        "words by unseen speakers",
        mean[("shared", n_min)] > mean[("whole-word", n_min)],
        f"shared {mean[('shared', n_min)]:.3f} vs whole-word {mean[('whole-word', n_min)]:.3f}"
        + (f" vs hmmlearn {mean[('hmmlearn', n_min)]:.3f}" if ("hmmlearn", n_min) in mean
           else ""))
    result.notes += [
        f"Corpus: {len(vocab)} words x {n_spk} espeak-ng en-us speakers (variants "
        f"{', '.join(s.variant for s in speakers)}; speed/pitch drawn per speaker); the last "
        f"{len(test_spk)} speakers are test-only. White noise at {cfg['snr_db']} dB SNR. "
        f"Features: 13 MFCC + deltas + delta-deltas (39 dims), 25 ms / 10 ms.",
        f"Models: 3 emitting states per unit, {cfg['n_mix']} diagonal Gaussians per state, "
        f"{cfg['n_iter']} Baum-Welch iterations from a uniform segmentation; a shared 'sil' unit "
        "at both ends of every shared word model; the whole-word lexicon gives every word "
        "private units with the same number of states (silence included).",
        "hmmlearn peer: one GaussianHMM per word (1 Gaussian per state; hmmlearn's GMMHMM "
        "diverged to NaN and took ~4 s per word here), same states, left-to-right, the same "
        "uniform-segmentation start, fitted by hmmlearn's Baum-Welch; decoded with tying's "
        "batched Viterbi with end='any', which equals hmmlearn.decode "
        f"(tests/test_speech_hmm.py); run at {peer_ns} examples/word (time budget).",
        "Recognition: the best Viterbi path score of each candidate word model (all words "
        "and utterances in one batch).",
        f"Unseen words ({len(unseen)}): {', '.join(unseen)}.",
    ]
    _plot(ctx, result, cfg, systems, acc, acc_unseen, params)
    return result


def _plot(ctx, result, cfg, systems, acc, acc_unseen, params):
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2),
                                 gridspec_kw={"width_ratios": [2, 1]})
    ns = cfg["examples"]
    styles = {"shared": "C0-o", "whole-word": "C1-s", "hmmlearn": "C2--^"}
    for s in systems:
        xs = [n for n in ns if (s, n) in acc]
        m = [np.mean(acc[(s, n)]) for n in xs]
        e = [np.std(acc[(s, n)]) for n in xs]
        ax.errorbar(xs, m, yerr=e, fmt=styles[s], capsize=3, label=f"{s}: seen words")
    m = [np.mean(acc_unseen[n]) for n in ns]
    e = [np.std(acc_unseen[n]) for n in ns]
    ax.errorbar(ns, m, yerr=e, fmt="C0:D", capsize=3, label="shared: words never trained")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("training examples per seen word (speakers)")
    ax.set_ylabel("accuracy on unseen speakers")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Isolated-word recognition")
    names = ["shared", "whole-word"]
    bx.bar(names, [params[k] for k in names], color=["C0", "C1"])
    for i, k in enumerate(names):
        bx.text(i, params[k], f"{params[k]:,}", ha="center", va="bottom", fontsize=8)
    bx.set_ylabel("parameters (seen words)")
    bx.set_title("Model size")
    fig.tight_layout()
    ctx.save_plot(result, fig, "phonemes.png")
