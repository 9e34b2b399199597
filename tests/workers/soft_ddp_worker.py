"""Run under torchrun: two soft-tied classifiers trained with DDP (gloo); report per-step penalty
values and final parameters, and the same training in one process on the full batch."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from tying.soft import SoftTie

STEPS, BATCH = 4, 8      # the batch is split across the ranks


def build(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def data():
    g = torch.Generator().manual_seed(7)
    return (torch.randn(BATCH, 6, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (BATCH,), generator=g))


def train(a, b, x, y, case):
    norm, _, how = case.partition("+")
    tie = SoftTie.between(a, b, norm=norm, strength=0.3, exclude="0.bias")
    opt = torch.optim.SGD([*a.parameters(), *b.parameters()], lr=0.2)
    values = []
    for _ in range(STEPS):
        opt.zero_grad()
        task = F.cross_entropy(a(x), y) + F.cross_entropy(b(x + 0.5), y)
        if how == "direct":          # after DDP's all-reduce: the same gradient on every rank
            task.backward()
            values.append(tie.backward().item())
        else:
            penalty = tie()
            values.append(penalty.item())
            (task + penalty).backward()
        opt.step()
    return values


def flat(*models):
    return [v for m in models for p in m.parameters() for v in p.detach().reshape(-1).tolist()]


dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
x, y = data()
per = BATCH // world
report = {}
for case in ("l2sq", "l1", "group", "l2sq+direct"):
    a, b = build(0), build(1)
    values = train(DDP(a), DDP(b), x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per],
                   case)
    ra, rb = build(0), build(1)
    ref_values = train(ra, rb, x, y, case)
    report[case] = {"values": values, "params": flat(a, b), "ref_values": ref_values,
                    "ref_params": flat(ra, rb)}
dist.destroy_process_group()
Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(report))
