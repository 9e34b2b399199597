"""What a tie costs per training step: ties made by `tying` vs. the same ties made by hand.

`tying.tie` registers the same Parameter object a hand-made tie (`a.weight = b.weight`)
would, so the goal is a ratio ≤ 1.02. A transposed tie goes through a parametrization;
its hand-made twin is a module that calls `F.linear(x, W.t())`.

Run: .venv/bin/python benchmarks/bench_tie_overhead.py
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import tying
from common import interleaved, table, write
from tying.models import SharedEncoder, TinyGPT

GOAL = 1.02


def gpt(by: str) -> nn.Module:
    torch.manual_seed(0)
    m = TinyGPT(vocab=8000, d_model=128, n_layers=2, n_heads=4, context=64,
                tie_embeddings=False)
    if by == "tying":
        tying.tie(m, {"head.weight": "embed.weight"})
    else:
        m.head.weight = m.embed.weight
    return m


def albert(by: str) -> nn.Module:
    torch.manual_seed(0)
    m = SharedEncoder(d_model=128, n_layers=6, n_unique=6, n_heads=4, vocab=1000)
    if by == "tying":
        tying.tie_layers(m, "blocks", n_unique=1, order="all")
    else:
        for block in m.blocks[1:]:
            for name, _ in list(block.named_parameters()):
                mod_name, _, attr = name.rpartition(".")
                setattr(block.get_submodule(mod_name), attr,
                        m.blocks[0].get_submodule(mod_name)._parameters[attr])
    return m


class HandTiedAE(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.enc = nn.Linear(d, h)
        self.dec_bias = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return F.linear(torch.tanh(self.enc(x)), self.enc.weight.t(), self.dec_bias)


def autoencoder(by: str) -> nn.Module:
    torch.manual_seed(0)
    if by == "hand":
        return HandTiedAE(784, 256)
    m = nn.Sequential(nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 784))
    tying.tie(m, {"2.weight": "0.weight"}, transform="T")
    return m


def step_fn(model: nn.Module, kind: str):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    if kind == "gpt":
        x = torch.randint(0, 8000, (8, 64), generator=g)
        y = torch.roll(x, -1, 1)
    elif kind == "albert":
        x, y = torch.randint(0, 1000, (8, 64), generator=g), torch.randint(0, 2, (8,))
    else:
        x = torch.rand(64, 784, generator=g)
        y = x

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        if kind == "gpt":
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        elif kind == "albert":
            loss = F.cross_entropy(out, y)
        else:
            loss = F.mse_loss(out, y)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    torch.set_num_threads(1)  # with one thread, thread CPU time is the step's whole cost
    rows = []
    for kind, build in (("gpt", gpt), ("albert", albert), ("autoencoder", autoencoder)):
        a, b = build("hand"), build("tying")
        assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
        med = interleaved({"hand": step_fn(a, kind), "tying": step_fn(b, kind)}, rounds=31,
                          clock="cpu")
        rows.append({"model": kind, "hand ms": med["hand"] * 1e3,
                     "tying ms": med["tying"] * 1e3, "ratio": med["tying"] / med["hand"]})
    print(table(rows))
    worst = max(r["ratio"] for r in rows if r["model"] != "autoencoder")
    print(f"\nworst ratio for identity ties: {worst:.3f} (goal ≤ {GOAL}); transposed tie: "
          f"{rows[-1]['ratio']:.3f}")
    path = write("bench_tie_overhead", {
        "goal": f"training step with tying's ties / with hand-made ties ≤ {GOAL}",
        "rows": rows, "worst_identity_tie_ratio": worst, "goal_met": worst <= GOAL,
        "transposed_tie_ratio": rows[-1]["ratio"],
        "method": "one torch thread, interleaved rounds (rotating order), median per-step "
                  "thread CPU time, AdamW step"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
