"""What the distributed workers and the single-process references share."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import tying
from tying.models import SharedEncoder, TinyGPT

STEPS = 3
BATCH = 4  # split across 2 ranks


def build(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "gpt":
        return TinyGPT(vocab=40, d_model=16, n_layers=2, n_heads=2, context=8)
    if kind == "albert":
        return SharedEncoder(d_model=16, n_layers=4, n_unique=2, order="cycle", n_heads=2,
                             vocab=40, n_classes=3)
    if kind == "autoencoder":
        ae = nn.Sequential(nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 12))
        tying.tie(ae, {"2.weight": "0.weight"}, transform="T")
        return ae
    raise ValueError(kind)


def batch(kind: str):
    g = torch.Generator().manual_seed(1)
    if kind == "gpt":
        idx = torch.randint(0, 40, (BATCH, 8), generator=g)
        return idx, torch.roll(idx, -1, dims=1)
    if kind == "albert":
        return torch.randint(0, 40, (BATCH, 6), generator=g), torch.randint(0, 3, (BATCH,),
                                                                              generator=g)
    x = torch.randn(BATCH, 12, generator=g)
    return x, x


def loss_fn(kind: str, model: nn.Module, x, y) -> torch.Tensor:
    out = model(x)
    if kind == "gpt":
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    if kind == "albert":
        return F.cross_entropy(out, y)
    return F.mse_loss(out, y)


def train(kind: str, model: nn.Module, x, y) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(STEPS):
        opt.zero_grad()
        loss_fn(kind, model, x, y).backward()
        opt.step()


def flat(model: nn.Module) -> list[float]:
    """Every unique parameter, gathered (DTensor) and flattened, in registration order."""
    out = []
    for p in model.parameters():
        t = p.full_tensor() if hasattr(p, "full_tensor") else p
        out += t.detach().reshape(-1).tolist()
    return out


def reference(kind: str) -> list[float]:
    model = build(kind)
    x, y = batch(kind)
    train(kind, model, x, y)
    return flat(model)
