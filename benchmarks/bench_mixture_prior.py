"""Benchmark: the mixture prior's forward + gradient as a fraction of a LeNet-5-Caffe step.

Measured IN THE SAME RUN, interleaved, medians over rounds (benchmarks/common.py):

- ``step``: one plain training step of LeNet-5-Caffe (431k weights), batch 128, Adam;
- ``fast``: ``prior().backward()`` with the fused, chunked closed-form gradient (J = 17);
- ``naive``: ``prior.naive().backward()``, autodiff through an N×J logsumexp (the peer;
  ANCHORS.md: 2.5–3.4× a step on this machine).

Two states of the mixture: ``init`` (the prior as built on a fresh network: J means over
the weight range, σ = the spacing) and ``settled`` (every weight within ~σ of its nearest
component's mean, σ_j = 0.003, as at the end of retraining: most (weight, component) pairs
are then far below exp's float32 range, the case that made the previous kernel slow).

Goal: fast ≤ 0.25× a step. Memory: the bytes autograd saves for the backward pass (counted with
``saved_tensors_hooks``): O(N) for the fast version, O(N·J) for the naive one.

Usage: ``.venv/bin/python benchmarks/bench_mixture_prior.py [--rounds N] [--threads T]``;
writes benchmarks/results/bench_mixture_prior.json.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from common import interleaved, table, write
from tying.mixture import MixturePrior
from tying.models import LeNet5Caffe


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves while ``fn()`` builds its graph."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.backward()
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: this thread's CPU time (robust on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = LeNet5Caffe()
    prior = MixturePrior(net, 17, include="*weight")
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    def fast():
        prior().backward()

    def naive():
        prior.naive().backward()

    def settle():
        # the end of retraining: every weight within ~σ of its component's mean, σ = 0.003
        with torch.no_grad():
            prior.log_precisions.fill_(-2.0 * math.log(0.003))
            mu = prior.component_means()
            for _, p in prior.named_targets():
                near = mu[(p.reshape(-1, 1) - mu).abs().argmin(1)].view_as(p)
                p.copy_(near + 0.003 * torch.randn_like(p))

    t = interleaved({"step": step, "fast": fast, "naive": naive}, rounds=args.rounds,
                    clock=args.clock)
    settle()
    t_settled = interleaved({"step": step, "fast": fast, "naive": naive}, rounds=args.rounds,
                            clock=args.clock)
    mem_fast, mem_naive = saved_bytes(prior), saved_bytes(prior.naive)
    r_fast = max(t["fast"] / t["step"], t_settled["fast"] / t_settled["step"])
    r_naive = max(t["naive"] / t["step"], t_settled["naive"] / t_settled["step"])
    rows = [{"state": state, "what": k, "median_ms": 1e3 * v, "fraction_of_step": v / tt["step"]}
            for state, tt in (("init", t), ("settled", t_settled)) for k, v in tt.items()]
    print(table(rows))
    print(f"autograd saved bytes: fast {mem_fast:,}  naive {mem_naive:,}  "
          f"(N = {prior.n_weights:,}, J = {prior.n_components})")
    goal = 0.25
    path = write("bench_mixture_prior", {
        "goal": "mixture prior forward + gradient <= 0.25x a plain LeNet-5-Caffe training step "
                "(batch 128, J = 17), memory not growing as N x J",
        "n_weights": prior.n_weights, "n_components": prior.n_components,
        "clock": args.clock, "seconds": t, "seconds_settled": t_settled,
        "prior_fraction_of_step_ratio": r_fast,
        "prior_fraction_of_step_init_ratio": t["fast"] / t["step"],
        "prior_fraction_of_step_settled_ratio": t_settled["fast"] / t_settled["step"],
        "naive_fraction_of_step_ratio": r_naive, "speedup_vs_naive_ratio": t["naive"] / t["fast"],
        "saved_bytes_fast": mem_fast, "saved_bytes_naive": mem_naive,
        "saved_bytes_naive_over_fast_ratio": mem_naive / mem_fast,
        "fraction_goal_met": r_fast <= goal,
        "memory_goal_met": mem_fast <= 4 * (prior.n_weights + 3 * prior.n_components) * 2,
    })
    print(f"prior = {r_fast:.3f}x a step (worse of the two states; goal <= {goal}); "
          f"naive = {r_naive:.2f}x; -> {path}")


if __name__ == "__main__":
    main()
