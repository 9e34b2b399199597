"""Benchmark: `tying.SoftTie` (fused, closed-form gradient) vs. the naive autograd loop.

Three measurements, each compared IN THE SAME RUN, interleaved, medians of many rounds:

1. penalty + gradient on a model of 100+ tensors (a deep MLP with LayerNorm, ~3.3M weights);
   goal: >= 2x faster than ``sum(((a - b)**2).sum() for a, b in pairs)`` + backward;
2. the same on many small tensors (1,000 tensors of 16 elements); goal >= 5x;
3. the overhead on a LeNet-5-sized training step (two LeNet-5 models trained jointly, batch 64
   each, Adam): step time with the fused penalty vs. without; goal <= 5% added.

Usage: ``.venv/bin/python benchmarks/bench_soft_tie.py [--rounds N] [--threads T]``; writes
benchmarks/results/bench_soft_tie.json.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common import interleaved as common_interleaved
from common import machine
from tying.models import LeNet5
from tying.soft import SoftTie


def deep_mlp() -> nn.Module:
    layers = []
    for _ in range(50):
        layers += [nn.Linear(256, 256), nn.LayerNorm(256)]
    return nn.Sequential(*layers)          # 200 tensors, 3.31M weights


def many_small() -> nn.Module:
    return nn.ModuleList(nn.Linear(3, 4) for _ in range(500))   # 1,000 tensors of 12 and 4


def lenet5() -> nn.Module:
    return LeNet5(output="linear")


CLOCK = "cpu"  # set from --clock in main()


def interleaved(fns: dict, rounds: int) -> dict[str, float]:
    """Median seconds per call of each fn, the fns taking turns every round (common.interleaved).

    The clock is this thread's CPU time by default (``--clock cpu``): with one torch thread all
    the work runs here, and on a shared, oversubscribed machine wall time mostly measures the
    wait for a core.
    """
    return common_interleaved(fns, rounds=rounds, min_time=0.02, clock=CLOCK)


def penalty_case(model: nn.Module, rounds: int) -> dict:
    a = model
    b = copy.deepcopy(a)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01 * torch.randn_like(p))
    params = [*a.parameters(), *b.parameters()]
    pairs = list(zip(a.parameters(), b.parameters()))
    tie = SoftTie.between(a, b, strength=1.0)

    def clear():
        for p in params:
            p.grad = None

    def fused():
        clear()
        tie().backward()

    def direct():
        clear()
        tie.backward()

    def naive():
        clear()
        sum(((x - y) ** 2).sum() for x, y in pairs).backward()

    # the three agree before we time them
    fused()
    g_fused = [p.grad.clone() for p in params]
    direct()
    g_direct = [p.grad.clone() for p in params]
    naive()
    for g, h, p in zip(g_fused, g_direct, params):
        assert torch.allclose(g, p.grad, rtol=1e-4, atol=1e-6)
        assert torch.allclose(h, p.grad, rtol=1e-4, atol=1e-6)
    t = interleaved({"naive": naive, "fused": fused, "direct": direct}, rounds)
    return {"tensors_per_model": len(pairs), "elements_per_model": sum(p.numel() for p, _ in pairs),
            "path": "flat" if tie._buckets[0].flat else "foreach",
            "naive_ms": t["naive"] * 1e3, "fused_ms": t["fused"] * 1e3,
            "direct_ms": t["direct"] * 1e3, "speedup": t["naive"] / t["fused"],
            "speedup_direct": t["naive"] / t["direct"]}


def training_case(rounds: int, batch: int = 64) -> dict:
    torch.manual_seed(0)
    a = lenet5()
    b = copy.deepcopy(a)
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.rand(batch, 1, 32, 32, generator=g), torch.rand(batch, 1, 32, 32, generator=g)
    ya, yb = torch.randint(0, 10, (batch,), generator=g), torch.randint(0, 10, (batch,),
                                                                         generator=g)
    opt = torch.optim.Adam([*a.parameters(), *b.parameters()], lr=1e-4)
    tie = SoftTie.between(a, b, strength=1e-3)
    pairs = list(zip(a.parameters(), b.parameters()))

    def step(penalty, direct=False):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(a(xa), ya) + F.cross_entropy(b(xb), yb)
        if penalty is not None and not direct:
            loss = loss + penalty()
        loss.backward()
        if direct:
            penalty.backward()
        opt.step()

    def naive_penalty():
        return 1e-3 * sum(((x - y) ** 2).sum() for x, y in pairs)

    t = interleaved({"no penalty": lambda: step(None), "fused": lambda: step(tie),
                     "direct": lambda: step(tie, direct=True),
                     "naive": lambda: step(naive_penalty)}, rounds)
    return {"params_per_model": sum(p.numel() for p in a.parameters()),
            "tensors_per_model": len(pairs), "batch_per_model": batch,
            "step_ms_no_penalty": t["no penalty"] * 1e3, "step_ms_fused": t["fused"] * 1e3,
            "step_ms_naive": t["naive"] * 1e3, "step_ms_direct": t["direct"] * 1e3,
            "overhead_fused": t["fused"] / t["no penalty"] - 1,
            "overhead_direct": t["direct"] / t["no penalty"] - 1,
            "overhead_naive": t["naive"] / t["no penalty"] - 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: stable timings on a shared machine)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: this thread's CPU time (robust on a shared machine); wall")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                          "bench_soft_tie.json"))
    args = ap.parse_args()
    global CLOCK
    CLOCK = args.clock
    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu measures one thread: use --threads 1 (or --clock wall)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    large = penalty_case(deep_mlp(), args.rounds)
    small = penalty_case(many_small(), args.rounds)
    train = training_case(args.rounds)
    goals = []
    for how, sfx in (("penalty() in the loss (autograd)", ""), ("penalty.backward()", "_direct")):
        sp_l, sp_s = large["speedup" + sfx], small["speedup" + sfx]
        ov = train["overhead_" + ("direct" if sfx else "fused")]
        goals += [
            {"goal": f"{how}: >= 2x the naive loop, model of 100+ tensors", "target": 2.0,
             "measured": sp_l, "met": sp_l >= 2.0},
            {"goal": f"{how}: >= 5x the naive loop, many small tensors", "target": 5.0,
             "measured": sp_s, "met": sp_s >= 5.0},
            {"goal": f"{how}: <= 5% added to a LeNet-5 training step", "target": 0.05,
             "measured": ov, "met": ov <= 0.05},
        ]
    print(f"{'case':<26}{'naive':>11}{'penalty()':>12}{'ratio':>7}{'.backward()':>13}{'ratio':>7}")
    for label, c in (("100+ tensors", large), ("many small", small)):
        print(f"{label + ' (' + str(c['tensors_per_model']) + ')':<26}{c['naive_ms']:>9.3f}ms"
              f"{c['fused_ms']:>10.3f}ms{c['speedup']:>6.2f}x{c['direct_ms']:>11.3f}ms"
              f"{c['speedup_direct']:>6.2f}x")
    print(f"LeNet-5 step: none {train['step_ms_no_penalty']:.3f} ms, penalty() "
          f"{train['step_ms_fused']:.3f} ms ({100 * train['overhead_fused']:+.1f}%), "
          f".backward() {train['step_ms_direct']:.3f} ms ({100 * train['overhead_direct']:+.1f}%),"
          f" naive {train['step_ms_naive']:.3f} ms ({100 * train['overhead_naive']:+.1f}%)")
    for g in goals:
        print(f"  {'MET ' if g['met'] else 'MISS'} {g['goal']}: {g['measured']:.3g} "
              f"(target {g['target']})")
    out = {"benchmark": "bench_soft_tie", "large": large, "many_small": small,
           "lenet5_step": train, "goals": goals,
           "machine": machine(),
           "method": f"interleaved rounds ({args.rounds}), median seconds per call, clock "
                     f"{args.clock} ({'thread CPU time' if args.clock == 'cpu' else 'wall'}); "
                     "penalty cases time forward + backward with grads reset to None; "
                     "penalty() = added to the loss (autograd), .backward() = SoftTie.backward() "
                     "after loss.backward()"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
