"""The speech experiments' guards, and a small end-to-end run of the pipeline on espeak-ng."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from tying.errors import SystemPackageMissing
from tying.experiments import bdg, phonemes
from tying.experiments.registry import _REGISTRY
from tying.speech import Lexicon, PhoneHMMs, featurize, make_speakers, synthesize_corpus


@pytest.mark.parametrize("module, name", [(phonemes, "phonemes"), (bdg, "bdg")])
def test_experiments_declare_and_check_espeak(monkeypatch, module, name):
    assert _REGISTRY[name].needs == ("espeak-ng",)
    monkeypatch.setattr(shutil, "which", lambda _: None)
    ctx = SimpleNamespace(config=dict(module.PRESETS["quick"]), seeds=[0])
    with pytest.raises(SystemPackageMissing, match="espeak-ng"):
        module.run(ctx)


def test_choose_unseen_keeps_phones_covered():
    lex = Lexicon({"ab": "ab", "ba": "ba", "abc": "abc", "ca": "ca", "bb": "bb"}, silence=False)
    unseen = phonemes.choose_unseen(lex, 2, np.random.default_rng(0))
    seen = [w for w in lex if w not in unseen]
    assert len(unseen) == 2
    assert {p for w in unseen for p in lex[w]} <= {p for w in seen for p in lex[w]}
    with pytest.raises(ValueError, match="n_unseen"):
        phonemes.choose_unseen(lex, 5, np.random.default_rng(0))


def test_waibel_tdnn_shape_and_sharing():
    import torch

    net = bdg.WaibelTDNN()
    assert net(torch.randn(4, 16, 15)).shape == (4, 3)
    # 16*8*3 + 8 + 8*3*5 + 3 weights and biases (+1 output scale): shared across all frames.
    assert sum(p.numel() for p in net.parameters()) == 16 * 8 * 3 + 8 + 8 * 3 * 5 + 3 + 1


def test_wide_tdnn_reference_size_and_reproducible_training():
    import torch

    net = bdg.WideTDNN(64)
    assert net(torch.randn(4, 16, 15)).shape == (4, 3)
    # windows 3, 5, 5 over 16 -> W -> W -> 3 channels, weights and biases: 5W² + 65W + 3
    assert sum(p.numel() for p in net.parameters()) == 5 * 64 ** 2 + 65 * 64 + 3 == 24_643
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 16, 15)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    cfg = {"lr": 0.01, "weight_decay": 0.0, "epochs": 2, "batch": 16}
    # the network is built after seeding, so two runs agree whatever ran before them
    first = bdg._train_tdnn(x, y, cfg, seed=5, make_net=lambda: bdg.WideTDNN(4))
    torch.randn(100)
    second = bdg._train_tdnn(x, y, cfg, seed=5, make_net=lambda: bdg.WideTDNN(4))
    for a, b in zip(first.parameters(), second.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert isinstance(bdg._train_tdnn(x, y, cfg, seed=5), bdg.WaibelTDNN)


@pytest.mark.parametrize("width", [-1, 2.5, "64", True])
def test_a_bad_wide_width_is_refused_before_any_work(width):
    from tying.experiments.runner import RunSettingsError

    def no_work(*_):
        raise AssertionError("synthesis started before the settings were checked")

    ctx = SimpleNamespace(seeds=[0], progress=no_work)
    with pytest.raises(RunSettingsError, match="wide_width"):
        bdg._run(ctx, {**bdg.PRESETS["quick"], "wide_width": width})


@pytest.mark.system("espeak-ng")
def test_end_to_end_unseen_word_gets_a_model(tmp_path):
    words = ["cat", "tack", "act"]
    speakers = make_speakers(2, seed=3)
    utts = synthesize_corpus(words, speakers, cache_dir=tmp_path, pad_ms=40)
    feats = featurize(utts, snr_db=30.0)
    lex = Lexicon.from_espeak(words)
    train = [i for i, u in enumerate(utts) if u.text != "act"]
    model = PhoneHMMs(n_mix=1, n_iter=3).fit([feats[i] for i in train],
                                              [utts[i].text for i in train], lex)
    assert set(lex["act"]) <= set(model.units_)          # every phone of "act" was trained
    scores = model.score(feats, lex, words)
    assert scores.shape == (len(utts), 3) and np.isfinite(scores).all()
    seen_pred = model.predict([feats[i] for i in train], lex, ["cat", "tack"])
    assert np.mean([p == utts[i].text for p, i in zip(seen_pred, train)]) >= 0.75


def test_split_variants_is_disjoint_and_deterministic():
    train, test = bdg.split_variants(73, 25)
    assert len(train) == 73 and len(test) == 25 and not set(train) & set(test)
    assert set(train) | set(test) <= set(bdg.VARIANT_POOL)
    assert not set(bdg.WHISPERED) & set(bdg.VARIANT_POOL)
    assert bdg.split_variants(73, 25) == (train, test)
    assert bdg.split_variants(73, 25, seed=0) == (train, test)
    other = bdg.split_variants(73, 25, seed=1)                # each seed draws its own split
    assert set(other[1]) != set(test) and not set(other[0]) & set(other[1])
    assert bdg.split_variants(73, 25, seed=1) == other
    with pytest.raises(ValueError, match="n_train"):
        bdg.split_variants(len(bdg.VARIANT_POOL), 1)


def test_syllable_speaker_styles_do_not_depend_on_the_split():
    alone = bdg.syllable_speakers(["klatt5"], 3, seed=1)
    among = bdg.syllable_speakers(["m1", "klatt5", "zac"], 3, seed=1)
    assert among[3:6] == alone and len(set(alone)) == 3
    assert bdg.syllable_speakers(["klatt5"], 3, seed=2) != alone
