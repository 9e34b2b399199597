"""tying.data.domains: shifted copies are deterministic, shifted as documented, and disjoint."""

from __future__ import annotations

import pytest
import torch

from tying.data import Split, load_digits, rotate, shift_domain, split_domains


def tiny() -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 9, 9, generator=g)
    y = torch.arange(20) % 2
    return Split(x, y, x[:6].clone(), y[:6].clone(), 2, "tiny")


def test_deterministic_by_seed_and_seed_matters():
    s = tiny()
    a, b = shift_domain(s, seed=3), shift_domain(s, seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(shift_domain(s, seed=4).x_train, a.x_train)
    assert torch.equal(a.y_train, s.y_train) and a.n_classes == 2
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1


def test_each_change_is_what_the_docstring_says():
    s = tiny()
    only_contrast = shift_domain(s, rotation=0, contrast=0.5, noise=0)
    assert torch.allclose(only_contrast.x_train, 0.5 + 0.5 * (s.x_train - 0.5))
    flat = shift_domain(s, rotation=0, contrast=0.0, noise=0)
    assert torch.allclose(flat.x_train, torch.full_like(s.x_train, 0.5))
    noisy = shift_domain(s, rotation=0, contrast=1.0, noise=0.1, seed=0)
    resid = noisy.x_train - s.x_train
    assert 0.05 < resid.std() < 0.12              # noise of σ 0.1 (clipped at 0 and 1)
    assert torch.equal(shift_domain(s, rotation=0, contrast=1, noise=0).x_train, s.x_train)


def test_rotation_by_90_degrees_turns_the_image():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 1, 4] = 1.0            # a dot above the centre
    r = rotate(x, 90)
    peak = divmod(int(r.flatten().argmax()), 9)
    assert peak == (4, 1)          # counter-clockwise: now left of the centre
    assert torch.allclose(rotate(rotate(x, 30), -30).sum(), x.sum(), atol=0.3)
    with pytest.raises(ValueError, match="N, C, H, W"):
        rotate(torch.zeros(9, 9), 10)


def test_split_domains_is_disjoint_stratified_and_shifted():
    d = load_digits()
    a, b = split_domains(d, seed=1)
    assert len(a.x_train) + len(b.x_train) == len(d.x_train)
    for c in range(10):
        na, nb = int((a.y_train == c).sum()), int((b.y_train == c).sum())
        assert abs(na - nb) <= 1
    # A's images are originals, B's are not: no B image equals its source exactly
    assert not any(torch.equal(b.x_train[0], x) for x in d.x_train)
    assert b.x_test.shape == d.x_test.shape and not torch.equal(b.x_test, d.x_test)


def test_bad_arguments():
    s = tiny()
    with pytest.raises(ValueError, match="contrast"):
        shift_domain(s, contrast=-1)
    with pytest.raises(ValueError, match="noise"):
        shift_domain(s, noise=float("nan"))
    with pytest.raises(ValueError, match="rotation"):
        shift_domain(s, rotation=float("inf"))
