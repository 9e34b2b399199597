"""Shifted copies of a data set: a second "domain" with the same classes, different inputs.

The seed's scenario for soft tying: two models doing the same classification task whose input
distributions are somewhat different. `shift_domain` makes such a second domain from any `Split`
by a documented, deterministic mix of three changes, applied in this order to every image:

1. rotation by ``rotation`` degrees (counter-clockwise, about the centre, bilinear, zero fill);
2. contrast change: x ← 0.5 + ``contrast`` · (x − 0.5) (a grey background, fainter strokes);
3. Gaussian pixel noise of standard deviation ``noise`` (drawn from ``seed``), then clipped
   to [0, 1].

>>> from tying.data import load_digits, shift_domain
>>> a = load_digits()
>>> b = shift_domain(a, rotation=25, contrast=0.6, noise=0.1, seed=0)
>>> b.x_train.shape == a.x_train.shape, bool((b.y_train == a.y_train).all())
(True, True)
>>> bool((shift_domain(a, seed=0).x_test == b.x_test).all())   # deterministic by seed
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .split import Split

__all__ = ["rotate", "shift_domain", "split_domains"]


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate a batch of images (N, C, H, W) by ``degrees`` about the centre (zero fill)."""
    if x.dim() != 4:
        raise ValueError(f"rotate expects images (N, C, H, W), got shape {tuple(x.shape)}")
    if degrees == 0:
        return x.clone()
    t = math.radians(degrees)
    theta = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]],
                         dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _shift(x: torch.Tensor, rotation: float, contrast: float, noise: float,
           generator: torch.Generator) -> torch.Tensor:
    x = rotate(x, rotation)
    x = 0.5 + contrast * (x - 0.5)
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x.clamp(0.0, 1.0)


def shift_domain(split: Split, *, rotation: float = 25.0, contrast: float = 0.6,
                 noise: float = 0.1, seed: int = 0) -> Split:
    """A shifted copy of ``split`` (train and test), same labels; see the module docstring.

    Args:
        split: images (N, C, H, W) in [0, 1].
        rotation: degrees, counter-clockwise.
        contrast: factor about mid-grey; 1 keeps the contrast, 0 makes every pixel 0.5.
        noise: standard deviation of the added Gaussian noise (0: none).
        seed: the noise's seed; equal arguments give bit-identical copies.
    """
    if not contrast >= 0.0:
        raise ValueError(f"contrast must be >= 0, got {contrast}")
    if not noise >= 0.0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if not math.isfinite(rotation):
        raise ValueError(f"rotation must be finite, got {rotation}")
    g = torch.Generator().manual_seed(seed)
    tag = f"rot{rotation:g},c{contrast:g},n{noise:g}"
    return Split(_shift(split.x_train, rotation, contrast, noise, g), split.y_train.clone(),
                 _shift(split.x_test, rotation, contrast, noise, g), split.y_test.clone(),
                 split.n_classes, f"{split.name}[{tag}]")


def split_domains(split: Split, *, seed: int = 0, **shift) -> tuple[Split, Split]:
    """Two domains from one data set: disjoint halves of the training images.

    Domain A is the first half as it is; domain B is the other half, shifted by
    `shift_domain` (``shift`` are its keyword arguments). A keeps the original test set, B gets
    the shifted test set. The halves are drawn by ``seed``, stratified by class.
    """
    g = torch.Generator().manual_seed(seed)
    a_idx, b_idx = [], []
    for c in range(split.n_classes):
        idx = torch.nonzero(split.y_train == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        a_idx.append(idx[: len(idx) // 2])
        b_idx.append(idx[len(idx) // 2:])
    a, b = torch.cat(a_idx), torch.cat(b_idx)
    dom_a = Split(split.x_train[a], split.y_train[a], split.x_test, split.y_test,
                  split.n_classes, f"{split.name}[A]")
    half_b = Split(split.x_train[b], split.y_train[b], split.x_test, split.y_test,
                   split.n_classes, f"{split.name}[B]")
    return dom_a, shift_domain(half_b, seed=seed, **shift)
