"""`bdg`: Waibel et al. 1989's TDNN on synthesized /b d g/ syllables, against SNR.

The TDNN (16 log-mel coefficients x 15 frames of 10 ms from the syllable onset; 8 units of
window 3, then 3 units of window 5, each output unit summed over time: 515 parameters, every
weight shared across time) is built from `tying.nn.TimeDelay`. It is compared with an HMM
baseline (one left-to-right diagonal-GMM HMM per consonant, `tying.speech.PhoneHMMs`) and a
logistic regression on the same 16 x 15 input (and, as a capacity reference, `WideTDNN`: 48x
the parameters), on speakers whose espeak-ng variants are never heard in training, at clean,
20, 10, 5 and 0 dB SNR (white noise). All of them train on the same multi-condition set
(every training token at every SNR, with fresh noise draws). Anchor: 98.5% (TDNN) vs. 93.7%
(best HMM) on real Japanese /b d g/ (Waibel et al. 1989).

Speakers: espeak-ng's ~100 voice variants (all but the whispered ones, which have no voicing),
split at random into training and test variants, a fresh split for every seed (so the spread
over seeds includes which voices are tested, the largest source of variance). With only 20
training variants the test voices fall outside what was heard (a logistic regression scored 0.89
on clean test tokens); with ~75 they are covered, as in any speaker-independent recognizer.

Front end and augmentation (the same for all three systems; settings chosen on validation
speakers held out from the training variants, never on the test variants):

- Dither (``dither_db``): white noise that many dB below the syllable is added to every token,
  training and test, clean or noisy, as Kaldi's front end does; otherwise the digital silence
  before a clean onset gives log(floor) in every band, a value noise never produces.
- VTLP (``vtlp``; Jaitly & Hinton 2013, "Vocal Tract Length Perturbation (VTLP) improves
  speech recognition"): each training copy's mel filterbank is warped by its own random factor
  in [1 - vtlp, 1 + vtlp] (`tying.speech.features.vtlp_warp`), imitating other vocal tract
  lengths, i.e. more speakers. Test features are never warped.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..nn.time_delay import TimeDelay
from ..speech.corpus import Speaker, Utterance, noise_rng, synthesize
from ..speech.corpus import trim_silence as _trim
from ..speech.features import FeatureConfig, log_mel
from ..speech.hmm import PhoneHMMs
from ..speech.lexicon import Lexicon
from ..system import require_espeak
from .registry import register_experiment
from .runner import RunSettingsError, seed_everything

CONSONANTS = ("b", "d", "g")
VOWELS = ("A:", "i:", "u:", "eI", "oU", "E", "aI", "O:", "a", "I", "V", "aU")
SNRS = (None, 20.0, 10.0, 5.0, 0.0)       # None = clean
FEATURES = FeatureConfig(n_mels=16, fmin=100.0, fmax=5500.0)
N_FRAMES = 15

# espeak-ng 1.51's voice variants (espeak-ng-data/voices/!v), less the whispered ones (no
# voicing: /b d g/ lose their defining cue) and "Mr serious" (a space in the name).
VARIANT_POOL = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Demonic", "Denis", "Diogo",
    "Gene", "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike",
    "Nguyen", "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot",
    "adam", "anika", "anikaRobot", "announcer", "antonio", "aunty", "belinda", "benjamin",
    "boris", "caleb", "croak", "david", "ed", "edward", "edward2", "f1", "f2", "f3", "f4", "f5",
    "fast", "grandma", "grandpa", "gustave", "iven", "iven2", "iven3", "iven4", "john",
    "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "linda", "m1", "m2",
    "m3", "m4", "m5", "m6", "m7", "m8", "marcelo", "max", "michel", "miguel", "norbert", "pablo",
    "paul", "pedro", "quincy", "rob", "robert", "robosoft", "robosoft2", "robosoft3",
    "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "sandro", "shelby",
    "steph", "steph2", "steph3", "travis", "victor", "zac")
WHISPERED = ("whisper", "whisperf")   # excluded from the pool; scored separately
WIDE = "wide TDNN"                    # the capacity reference's name in tables and the plot

PRESETS = {
    "quick": {"n_vowels": 4, "train_variants": 12, "test_variants": 4, "styles": 1,
              "noise_draws": 1, "epochs": 30, "batch": 64, "lr": 0.01, "weight_decay": 1e-4,
              "hmm_states": 5, "hmm_mix": 2, "hmm_iter": 5, "dither_db": 45.0, "vtlp": 0.0,
              "wide_width": 16},
    # 6 noise draws per training token and SNR: on validation speakers (held out from the
    # training variants, 4 seeds) 10 dB went from 0.959 with 3 draws to 0.965; 12 gave no more
    "full": {"n_vowels": 12, "train_variants": 73, "test_variants": 25, "styles": 3,
             "noise_draws": 6, "epochs": 60, "batch": 128, "lr": 0.01, "weight_decay": 1e-4,
             "hmm_states": 8, "hmm_mix": 16, "hmm_iter": 8, "dither_db": 45.0, "vtlp": 0.0,
             # a capacity reference (WideTDNN): on validation speakers (2 seeds, 10 dB) width
             # 64 scored 0.995 and 0.972 where the 516-parameter TDNN scored 0.980 and 0.944
             "wide_width": 64},
}


class WaibelTDNN(nn.Module):
    """16 x 15 input -> TimeDelay(16, 8, window=3) -> TimeDelay(8, 3, window=5) -> sum over time.

    Example:
        >>> WaibelTDNN()(torch.randn(2, 16, 15)).shape
        torch.Size([2, 3])
    """

    def __init__(self):
        super().__init__()
        self.hidden = TimeDelay(16, 8, window=3)       # (B, 8, 13), tanh
        self.output = TimeDelay(8, 3, window=5)        # (B, 3, 9), tanh
        self.scale = nn.Parameter(torch.tensor(1.0))   # temperature of the summed outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x)).sum(-1) * self.scale


class WideTDNN(nn.Module):
    """A capacity reference, not Waibel's network: three ReLU `TimeDelay` layers (windows 3, 5
    and 5; ``width`` units in the hidden two, 3 outputs) averaged over time.

    It answers what these voices allow when the 516-parameter budget is lifted (width 64:
    24,643 parameters, every weight still shared across time).

    Example:
        >>> WideTDNN(8)(torch.randn(2, 16, 15)).shape
        torch.Size([2, 3])
    """

    def __init__(self, width: int = 64):
        super().__init__()
        self.layers = nn.Sequential(TimeDelay(16, width, window=3, activation="relu"),
                                    TimeDelay(width, width, window=5, activation="relu"),
                                    TimeDelay(width, 3, window=5, activation=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).mean(-1)


def split_variants(n_train: int, n_test: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Disjoint (training, test) variant names drawn at random from `VARIANT_POOL`."""
    if n_train + n_test > len(VARIANT_POOL):
        raise ValueError(f"n_train + n_test must be at most {len(VARIANT_POOL)}, got "
                         f"{n_train} + {n_test}")
    order = np.random.default_rng(seed).permutation(len(VARIANT_POOL))
    names = [VARIANT_POOL[i] for i in order]
    return names[n_test: n_test + n_train], names[:n_test]


def syllable_speakers(variants, styles: int, seed: int) -> list[Speaker]:
    """``styles`` random (speed, pitch) settings for each of ``variants``.

    Each variant's settings depend only on ``seed`` and the variant's name, not on which other
    variants are listed, so a voice sounds the same whichever split it lands in.
    """
    out = []
    for v in variants:
        rng = np.random.default_rng([seed, *v.encode()])
        for _ in range(styles):
            out.append(Speaker("en-us", v, int(rng.integers(130, 200)), int(rng.integers(25, 80))))
    return out


def onset_window(u: Utterance, snr: float | None, seed: int, *, warp: float = 1.0,
                 dither_db: float | None = None) -> np.ndarray:
    """(16, 15) log-mel from 20 ms before the onset, noise at ``snr`` relative to the syllable.

    Short syllables are padded with silence (then noise) so the 150 ms window always fits.
    ``warp`` != 1 warps the filterbank (VTLP, `tying.speech.features.vtlp_warp`);
    ``dither_db`` adds white noise that many dB below the syllable's power (a noise floor, so
    digital silence does not give log(floor) values).
    """
    need = N_FRAMES * FEATURES.hop + FEATURES.win       # frames 1..15 and no more
    audio = np.pad(u.audio[: need + FEATURES.hop], (0, max(0, need + FEATURES.hop - len(u.audio))))
    audio = audio.astype(np.float64)
    power = float(np.mean(u.audio.astype(np.float64) ** 2))   # the whole syllable
    if snr is not None:
        noise = noise_rng(u, snr, seed).standard_normal(len(audio))
        audio = audio + noise * np.sqrt(power / 10 ** (snr / 10))
    if dither_db is not None:
        floor = noise_rng(u, None, seed).standard_normal(len(audio))   # None: never used above
        audio = audio + floor * np.sqrt(power / 10 ** (dither_db / 10))
    feats = log_mel(audio.astype(np.float32), u.sample_rate, FEATURES, warp=warp)
    win = feats[1: 1 + N_FRAMES]
    win = win - win.mean()                              # loudness normalization per token
    return win.T.astype(np.float32)


def vtlp_factor(u: Utterance, snr: float | None, draw: int, seed: int, spread: float) -> float:
    """The VTLP warp factor of one training copy: uniform in [1 - spread, 1 + spread].

    Deterministic in (token, speaker, SNR, draw, seed); ``spread=0`` gives 1 (no warp).
    """
    if spread == 0:
        return 1.0
    rng = noise_rng(u, snr, seed * 7919 + 104729 + draw)   # a stream apart from the noise
    return float(rng.uniform(1.0 - spread, 1.0 + spread))


def _dataset(utts, snrs, seed, draws: int = 1, *, vtlp: float = 0.0, clean_copies: int = 1,
             dither_db: float | None = None):
    """Windows of every token at every SNR; ``draws`` independent noise draws per noisy SNR.

    ``vtlp`` > 0 warps every copy's filterbank by its own random factor in [1 - vtlp,
    1 + vtlp] (training only); ``clean_copies`` clean copies of each token (useful with VTLP).
    """
    xs, ys = [], []
    for snr in snrs:
        for k in range(clean_copies if snr is None else draws):
            for u in utts:
                xs.append(onset_window(u, snr, seed * 1000 + k, dither_db=dither_db,
                                       warp=vtlp_factor(u, snr, k, seed, vtlp)))
                ys.append(CONSONANTS.index(u.text[0]))
    return np.stack(xs), np.array(ys)


def _train_tdnn(x, y, cfg, seed, make_net=WaibelTDNN):
    """AdamW with a one-cycle learning rate (warm-up, then cosine decay to ~0), on a network
    ``make_net()`` builds after seeding."""
    gen = seed_everything(seed)
    net = make_net()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    steps = cfg["epochs"] * -(-len(x) // cfg["batch"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(cfg["epochs"]):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), cfg["batch"]):
            idx = perm[i: i + cfg["batch"]]
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net


@register_experiment(
    "bdg",
    description="Waibel 1989 TDNN (tying.nn.TimeDelay) vs. an HMM and a logistic regression on "
                "synthesized /b d g/ from unseen speakers, accuracy against SNR.",
    presets=PRESETS, default_seeds={"quick": 1, "full": 3}, needs=("espeak-ng",))
def run(ctx):
    require_espeak("The bdg experiment")
    return _run(ctx, ctx.config)


def _run(ctx, cfg):
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    width = cfg.get("wide_width", 0)      # checked before the long synthesis and training
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise RunSettingsError(f"wide_width must be a whole number of units, 0 to leave the wide "
                               f"TDNN out, got {width!r}")

    vowels = VOWELS[: cfg["n_vowels"]]
    syllables = [f"{c}'{v}" for c in CONSONANTS for v in vowels]
    # One speaker split per seed (seeded by it): the spread over seeds covers split variance.
    splits = {seed: split_variants(cfg["train_variants"], cfg["test_variants"], seed=seed)
              for seed in ctx.seeds}
    used = sorted({v for tr, te in splits.values() for v in tr + te})
    pool_spk = syllable_speakers(used, cfg["styles"], seed=1)
    whisper_spk = syllable_speakers(WHISPERED, cfg["styles"], seed=3)
    jobs = [(s, spk) for spk in pool_spk + whisper_spk for s in syllables]
    utts = [Utterance(s, spk, _trim(synthesize(s, spk, phonemes=True)))
            for s, spk in ctx.progress(jobs, "synthesize syllables")]
    whispered = [u for u in utts if u.speaker.variant in WHISPERED]

    # the wide TDNN is a capacity reference beside the three compared systems (width 0: off)
    systems = ("TDNN", "HMM", "logistic") + ((WIDE,) if width else ())
    acc = {(s, snr): [] for s in systems for snr in SNRS}
    acc_whisper = {s: [] for s in systems}
    seconds = {s: [] for s in systems}
    split_rows = []
    for seed in ctx.progress(ctx.seeds, "seeds"):
        train_v, test_v = splits[seed]
        assert not set(train_v) & set(test_v) and not set(train_v) & set(WHISPERED)
        train = [u for u in utts if u.speaker.variant in set(train_v)]
        test = [u for u in utts if u.speaker.variant in set(test_v)]
        front = {"dither_db": cfg.get("dither_db")}   # front end: train and test, all systems
        x_tr, y_tr = _dataset(train, SNRS, seed, cfg["noise_draws"], vtlp=cfg.get("vtlp", 0.0),
                              clean_copies=cfg.get("clean_copies", 1), **front)
        mu, sd = x_tr.mean((0, 2), keepdims=True), x_tr.std((0, 2), keepdims=True) + 1e-6
        x_tr = (x_tr - mu) / sd
        tests = {}
        for snr in SNRS:
            x, y = _dataset(test, [snr], seed + 1000, **front)    # never warped
            tests[snr] = ((x - mu) / sd, y)
        x, y = _dataset(whispered, [None], seed + 1000, **front)
        tests["whisper"] = ((x - mu) / sd, y)

        def record(system, snr, pred, y):
            a = float(np.mean(np.asarray(pred) == y))
            (acc_whisper[system] if snr == "whisper" else acc[(system, snr)]).append(a)

        t0 = time.perf_counter()
        net = _train_tdnn(x_tr, y_tr, cfg, seed)
        seconds["TDNN"].append(time.perf_counter() - t0)
        with torch.no_grad():
            for snr, (x, y) in tests.items():
                record("TDNN", snr, net(torch.from_numpy(x)).argmax(1).numpy(), y)
            x, y = tests[10.0]
            right = net(torch.from_numpy(x)).argmax(1).numpy() == y
        per_voice = {v: float(np.mean([r for r, u in zip(right, test) if u.speaker.variant == v]))
                     for v in test_v}
        worst = sorted(per_voice, key=lambda v: (per_voice[v], v))[:5]
        split_rows.append({
            "seed": seed, "test variants": len(test_v),
            "TDNN 10 dB": f"{float(np.mean(right)):.3f}",
            "hardest test variants for the TDNN at 10 dB": ", ".join(
                f"{v} {per_voice[v]:.2f}" for v in worst),
            "all test variants": ", ".join(sorted(test_v))})

        t0 = time.perf_counter()
        with threadpool_limits(torch.get_num_threads()):    # BLAS obeys --threads too
            lr = LogisticRegression(C=1.0, max_iter=300).fit(x_tr.reshape(len(x_tr), -1), y_tr)
        seconds["logistic"].append(time.perf_counter() - t0)
        for snr, (x, y) in tests.items():
            record("logistic", snr, lr.predict(x.reshape(len(x), -1)), y)

        lex = Lexicon({c: (c,) for c in CONSONANTS}, silence=False)
        t0 = time.perf_counter()
        hmm = PhoneHMMs(n_states=cfg["hmm_states"], n_mix=cfg["hmm_mix"], n_iter=cfg["hmm_iter"],
                        seed=seed, batch_size=512).fit(
            list(x_tr.transpose(0, 2, 1)), [CONSONANTS[i] for i in y_tr], lex)
        seconds["HMM"].append(time.perf_counter() - t0)
        for snr, (x, y) in tests.items():
            pred = hmm.predict(list(x.transpose(0, 2, 1)), lex, list(CONSONANTS))
            record("HMM", snr, [CONSONANTS.index(p) for p in pred], y)

        if width:      # trained last: the other systems' runs stay as they were
            t0 = time.perf_counter()
            wide = _train_tdnn(x_tr, y_tr, cfg, seed,
                               make_net=lambda: WideTDNN(width))
            seconds[WIDE].append(time.perf_counter() - t0)
            with torch.no_grad():
                for snr, (x, y) in tests.items():
                    record(WIDE, snr, wide(torch.from_numpy(x)).argmax(1).numpy(), y)
            split_rows[-1][f"{WIDE} 10 dB"] = f"{acc[(WIDE, 10.0)][-1]:.3f}"

    result = ctx.result()
    for (s, snr), vals in acc.items():
        result.add_metric(f"acc_{_key(s)}_{_label(snr).replace(' ', '')}", vals, "fraction")
    for s in systems:
        result.add_metric(f"train_seconds_{_key(s)}", seconds[s], "s")
    n_params = {"TDNN": sum(p.numel() for p in net.parameters()),
                "logistic": int(lr.coef_.size + lr.intercept_.size),
                "HMM": hmm.n_parameters()}
    if width:
        n_params[WIDE] = sum(p.numel() for p in wide.parameters())
    rows = []
    for snr in SNRS:
        row = {"SNR": _label(snr)}
        for s in systems:
            row[s] = f"{np.mean(acc[(s, snr)]):.3f} ± {np.std(acc[(s, snr)]):.3f}"
        rows.append(row)
    result.add_table("Accuracy on unseen speakers (mean ± std over seeds)", rows)
    result.add_table("Speaker split per seed (each seed draws its own; TDNN accuracy per test "
                     "variant at 10 dB)", split_rows)
    result.add_table("Models", [{"model": s, "parameters": n_params[s],
                                 "train seconds (mean)": round(float(np.mean(seconds[s])), 1)}
                                for s in systems])
    mean = {k: float(np.mean(v)) for k, v in acc.items()}
    ceiling = (f"; the {n_params[WIDE]:,}-parameter {WIDE} {mean[(WIDE, 10.0)]:.3f}"
               if width else "")
    result.add_claim(
        "TDNN >= 98.5% (Waibel's figure) on unseen speakers at 10 dB SNR",
        mean[("TDNN", 10.0)] >= 0.985,
        f"TDNN {mean[('TDNN', 10.0)]:.3f} at 10 dB (HMM {mean[('HMM', 10.0)]:.3f}, "
        f"logistic {mean[('logistic', 10.0)]:.3f}{ceiling})")
    noisy = [s for s in SNRS if s is not None]
    ahead = {s: mean[("TDNN", s)] > max(mean[("HMM", s)], mean[("logistic", s)]) for s in noisy}
    result.add_claim(
        "The TDNN is ahead of both the HMM and the logistic regression at every SNR below clean",
        all(ahead.values()),
        "; ".join(f"{s:g} dB: TDNN {mean[('TDNN', s)]:.3f} vs HMM {mean[('HMM', s)]:.3f}, "
                  f"logistic {mean[('logistic', s)]:.3f}" for s in noisy))
    for system in systems:
        result.add_metric(f"acc_{_key(system)}_whispered_clean", acc_whisper[system],
                          "fraction")
    result.add_table("Whispered voices (outside the pool: no voicing), clean, mean over seeds",
                     [{"system": s, "accuracy": f"{np.mean(acc_whisper[s]):.3f}"}
                      for s in systems])
    result.notes += [
        f"Syllables: /b d g/ x {len(vowels)} vowels ({' '.join(vowels)}) as espeak-ng phoneme "
        f"input. Speakers: {cfg['train_variants']} training and {cfg['test_variants']} test "
        f"voice variants drawn at random from espeak-ng's {len(VARIANT_POOL)} (all but the "
        f"whispered ones), {cfg['styles']} random speed/pitch settings each (fixed per variant): "
        f"{cfg['train_variants'] * cfg['styles']} training and "
        f"{cfg['test_variants'] * cfg['styles']} test speakers whose variants are never heard in "
        f"training; {len(train)} training and {len(test)} test tokens per SNR.",
        "Each seed draws its own speaker split (split_variants(seed=seed); seed 0's is the "
        "split every seed shared before), its own noise and its own initialization, so the "
        "mean ± std over seeds includes the variance from which voices land in the test set. "
        "Voices differ a lot in noise (an earlier run found kaukovalta and the "
        "Klatt-synthesizer variants klatt5, david, edward and robosoft3 much harder than the "
        "rest); each seed's test variants and its measured hardest ones are in the split "
        "table. The whispered variants stay outside every split and are scored separately.",
        "Input: 16 log-mel bands (100-5500 Hz, 25 ms windows, 10 ms hop) x 15 frames from 20 ms "
        "before the onset (found on the clean signal); each token minus its mean, then each "
        "band standardized with training statistics. White noise at the SNR relative to the "
        "syllable's mean power.",
        f"All systems train on the same multi-condition set: every training token clean "
        f"(x{cfg.get('clean_copies', 1)}) and, with {cfg['noise_draws']} independent "
        f"noise draw(s), at 20, 10, 5 and 0 dB ({len(x_tr)} windows). TDNN: "
        "tying.nn.TimeDelay(16, 8, window=3) -> TimeDelay(8, 3, window=5), tanh, summed over "
        f"time, times a learned scale; AdamW (lr {cfg['lr']}, "
        f"weight decay {cfg['weight_decay']}) with a one-cycle schedule, {cfg['epochs']} "
        f"epochs, batch {cfg['batch']}. HMM: {cfg['hmm_states']}-state left-to-right, "
        f"{cfg['hmm_mix']} diagonal Gaussians per state, {cfg['hmm_iter']} Baum-Welch "
        "iterations, one model per consonant. Logistic regression: scikit-learn, L2 (C=1), on "
        "the 240 inputs.",
        *_front_end_notes(cfg),
        *_wide_notes(width),
        "Why the speaker pool matters: the earlier version trained on 20 variants and tested on "
        "10 others (among them zac, whose formants are all scaled by 1.45, and anika); the "
        "logistic regression then reached 0.895 clean and the TDNN 0.865. Training on ~75 "
        "variants covers the test voices.",
        "Waibel et al. 1989 report 98.5% (TDNN) vs. 93.7% (HMM) on real speech from 3 Japanese "
        "speakers (speaker-dependent, clean); this is synthetic speech from unseen synthetic "
        "voices, in noise.",
    ]
    _plot(ctx, result, systems, acc)
    return result


def _wide_notes(width: int) -> list[str]:
    if not width:
        return []
    return [
        f"Wide TDNN (a capacity reference, not one of the compared systems): the same input, "
        f"three ReLU TimeDelay layers (windows 3, 5, 5; {width} units in the hidden "
        "two), averaged over time, trained exactly as the TDNN. The issue fixes the compared "
        "TDNN at Waibel's 516 parameters; this row shows how much of the gap to 98.5% is that "
        "budget and how much is the voices. On validation speakers (2 seeds, 10 dB) it scored "
        "0.995 and 0.972 where the 516-parameter TDNN scored 0.980 and 0.944. Distilling it "
        "into the 516-parameter TDNN (alpha 0.7, T 2) scored 0.974 and 0.921: worse than "
        "training that TDNN alone."]


def _front_end_notes(cfg) -> list[str]:
    notes = []
    if cfg.get("dither_db") is not None:
        notes.append(
            f"Dither: white noise {cfg['dither_db']:g} dB below the syllable's power is added to "
            "every token, training and test, clean or noisy (part of the front end, as in "
            "Kaldi's dither): without it the digital silence before a clean onset gives "
            "log(1e-10) in every band, a value noise never produces (on validation speakers "
            "dither raised the TDNN's clean accuracy; clean tokens can still score below 20 dB "
            "ones, see the table).")
    if cfg.get("vtlp", 0.0):
        notes.append(
            f"VTLP (vocal tract length perturbation, Jaitly & Hinton 2013, 'Vocal Tract Length "
            f"Perturbation (VTLP) improves speech recognition'): every training copy's mel "
            f"filterbank is warped by its own random factor alpha in [{1 - cfg['vtlp']:g}, "
            f"{1 + cfg['vtlp']:g}] (their piecewise-linear warp: f -> alpha f below "
            "4.8 kHz x min(alpha, 1) / alpha, then linear to a fixed Nyquist), which imitates "
            "shorter and longer vocal tracts, i.e. more speakers; test features are never "
            "warped. All three systems train on the same warped copies.")
    else:
        notes.append(
            "VTLP (vocal tract length perturbation, Jaitly & Hinton 2013: each training copy's "
            "mel filterbank warped by a random factor in [0.9, 1.1], option `vtlp`) is "
            "implemented but off: on validation speakers it gained nothing over dither alone, "
            "nor with twice the epochs (this 516-parameter TDNN has little capacity to spare).")
    notes.append(
        f"Noise draws: every training token is seen at every SNR with {cfg['noise_draws']} "
        "independent noise draws. On validation speakers (10 dB, TDNN): 3 draws 0.959, 6 draws "
        "0.965 (4 seeds, higher on each). On 2 of those seeds, where 3 draws gave 0.954 and 6 "
        "gave 0.962: 12 draws 0.957; training only at clean/20/10 dB 0.932 (the low-SNR "
        "tokens help at 10 dB); adding -5 dB 0.960; 5 speed/pitch styles per variant instead "
        "of 3, 0.955.")
    notes.append(
        "Front-end settings were chosen on validation speakers carved from the training "
        "variants only (15 of the 73 held out per seed, 4 seeds, accuracy at 10 dB), never on "
        "the test variants.")
    return notes


def _key(system: str) -> str:
    """A system's name as it appears in metric keys ("wide TDNN" -> "wide_TDNN")."""
    return system.replace(" ", "_")


def _label(snr) -> str:
    return "clean" if snr is None else f"{snr:g} dB"


def _plot(ctx, result, systems, acc):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs = np.arange(len(SNRS))
    for s, style in zip(systems, ("C0-o", "C1-s", "C2-^", "C3:d")):
        m = [np.mean(acc[(s, snr)]) for snr in SNRS]
        e = [np.std(acc[(s, snr)]) for snr in SNRS]
        ax.errorbar(xs, m, yerr=e, fmt=style, capsize=3,
                    label=f"{WIDE} (capacity reference)" if s == WIDE else s)
    ax.axhline(0.985, color="gray", ls=":", lw=1, label="Waibel 1989 TDNN (98.5%)")
    ax.axhline(0.937, color="gray", ls="--", lw=1, label="Waibel 1989 HMM (93.7%)")
    ax.set_xticks(xs, [_label(s) for s in SNRS])
    ax.set_xlabel("SNR (white noise)")
    ax.set_ylabel("accuracy on unseen speakers")
    ax.set_title("/b d g/ from synthesized syllables")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    ctx.save_plot(result, fig, "bdg.png")
