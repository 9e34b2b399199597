"""Benchmark `tying.nn.TimeDelay` / `LocallyConnected*` against their peers (forward + backward).

Four comparisons from issue 4, every pair timed in the same run: interleaved rounds, medians,
thread CPU time with one torch thread (robust to the other processes of a shared machine):

1. full-rate TimeDelay vs. torch.nn.Conv1d, same shapes and weights — goal: ratio ≤ 1.1;
2. TimeDelay(stride=r) vs. computing every frame and dropping — goal: speed-up ≥ 0.8·r;
3. sparse contexts ({−3, 0, 3}, {−7, 2}; uneven {−2, 0, 1}, {−9, 0, 1}) vs. an unfold/splice
   implementation — goal: ≥ 2× faster — and vs. a dilated Conv1d where one applies;
4. LocallyConnected1d / 2d vs. a naive loop over positions.

Run: ``.venv/bin/python benchmarks/bench_time_delay.py [--quick]``; writes
benchmarks/results/bench_time_delay.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from common import interleaved, machine
from tying.nn import LocallyConnected1d, LocallyConnected2d, TimeDelay


def fwd_bwd(fn, inputs, params):
    """One forward + backward of ``fn`` (gradients reset first, as a training step does)."""
    def run():
        for t in (*params, *inputs):
            t.grad = None
        out = fn()
        out.backward(torch.ones_like(out))
    return run


def compare(variants: dict, inputs, params, rounds: int) -> dict[str, float]:
    """Median seconds of forward + backward per variant: interleaved rounds, thread CPU time
    (one torch thread, so other processes on the shared machine do not count)."""
    return interleaved({k: fwd_bwd(f, inputs, params) for k, f in variants.items()},
                       rounds=rounds, min_time=0.15, clock="cpu")


def splice_unfold(x, weight, bias, context):
    """The unfold/splice TDNN (Kaldi's Splice + Linear): gather frames, concatenate, one matmul.

    The straightforward PyTorch rendering: ``unfold`` the window, index the context taps,
    flatten (B, T_out, C·K), one GEMM, bias. Same multiply-adds as `TimeDelay` (only the K taps).
    """
    span = context[-1] - context[0]
    idx = [o - context[0] for o in context]
    frames = x.unfold(2, span + 1, 1)[..., idx]  # (B, C, T_out, K)
    b, c, t_out, k = frames.shape
    spliced = frames.permute(0, 2, 1, 3).reshape(b, t_out, c * k)  # (B, T_out, C·K)
    out = spliced @ weight.reshape(weight.shape[0], -1).T + bias  # (B, T_out, O)
    return out.transpose(1, 2)


def naive_local1d(x, lc):
    outs = []
    base = lc.context[0]
    for t in range(lc.output_length):
        start = t * lc.stride - base
        frames = torch.stack([x[:, :, start + o] for o in lc.context], dim=-1)  # (B, C, K)
        outs.append(torch.einsum("bck,ock->bo", frames, lc.weight[t]) + lc.bias[t])
    return torch.stack(outs, dim=-1)


def naive_local2d(x, lc):
    (kh, kw), (ho, wo) = lc.kernel_size, lc.output_size
    w = lc.full_weight()
    rows = []
    for i in range(ho):
        cols = []
        for j in range(wo):
            patch = x[:, :, i:i + kh, j:j + kw]  # stride 1, no padding
            cols.append(torch.einsum("bchw,ochw->bo", patch, w[i * wo + j]))
        rows.append(torch.stack(cols, dim=-1))
    return torch.stack(rows, dim=-2) + lc.bias


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--reps", type=int, default=None, help="interleaved rounds (median)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared, loaded machine two "
                             "spinning threads per process distort every timing)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "bench_time_delay.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # 21 rounds: with 9, two calls of the very same kernel (the full-rate and dilated rows)
    # differed by up to 15% on this shared machine
    reps = args.reps or (3 if args.quick else 21)
    start = time.perf_counter()
    b, t = (8, 100) if args.quick else (32, 300)
    chans = [(40, 128), (128, 256)] if args.quick else [(40, 256), (256, 256), (512, 512)]
    # 512 → 512 at B=32 costs ~15 s per forward + backward on one slow core: use B=8 there.
    batch = {(512, 512): 8}
    rows = []

    def record(kind, shape, goal_text, ratio, goal_ok, times):
        rows.append({"comparison": kind, "shape": shape, "ms": {k: round(v * 1e3, 3)
                                                                for k, v in times.items()},
                     "ratio": round(ratio, 3), "goal": goal_text, "meets_goal": bool(goal_ok)})
        ms = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in times.items())
        print(f"{kind:<34} {shape:<28} {ms:<60} ratio {ratio:6.2f}  goal {goal_text:<14} "
              f"{'ok' if goal_ok else 'MISSED'}", flush=True)

    # 1. Full rate vs. Conv1d.
    for cin, cout in chans:
        for window in (3, 5):
            bb = batch.get((cin, cout), b)
            x = torch.randn(bb, cin, t, requires_grad=True)
            td = TimeDelay(cin, cout, window=window, activation=None)
            conv = torch.nn.Conv1d(cin, cout, window)
            with torch.no_grad():
                conv.weight.copy_(td.weight)
                conv.bias.copy_(td.bias)
            r = compare({"TimeDelay": lambda x=x, td=td: td(x),
                         "Conv1d": lambda x=x, conv=conv: conv(x)},
                        [x], [*td.parameters(), *conv.parameters()], reps)
            ratio = r["TimeDelay"] / r["Conv1d"]
            record("full rate vs Conv1d", f"B{bb} {cin}->{cout} T{t} K{window}", "<= 1.1",
                   ratio, ratio <= 1.1, r)

    # 2. Subsampled output vs. every frame then drop.
    for cin, cout in chans[:2]:
        for ratio_r in (2, 3):
            x = torch.randn(b, cin, t, requires_grad=True)
            full = TimeDelay(cin, cout, context=(-2, 0, 2), activation=None)
            sub = TimeDelay(cin, cout, context=(-2, 0, 2), stride=ratio_r, activation=None)
            sub.load_state_dict(full.state_dict())
            r = compare({"stride r": lambda x=x, sub=sub: sub(x),
                         "all frames then drop": lambda x=x, full=full, k=ratio_r:
                         full(x)[:, :, ::k]},
                        [x], [*full.parameters(), *sub.parameters()], reps)
            speedup = r["all frames then drop"] / r["stride r"]
            record(f"subsampled r={ratio_r} vs drop", f"B{b} {cin}->{cout} T{t}",
                   f">= {0.8 * ratio_r:.1f}x", speedup, speedup >= 0.8 * ratio_r, r)

    # 3. Sparse contexts vs. unfold/splice and vs. dilated Conv1d.
    for cin, cout in chans[:2]:
        for ctx in ((-3, 0, 3), (-7, 2), (-2, 0, 1), (-9, 0, 1)):
            x = torch.randn(b, cin, t, requires_grad=True)
            td = TimeDelay(cin, cout, context=ctx, activation=None)
            variants = {"TimeDelay": lambda x=x, td=td: td(x),
                        "unfold/splice": lambda x=x, td=td, c=ctx:
                        splice_unfold(x, td.weight, td.bias, c)}
            params = list(td.parameters())
            gaps = {q - p for p, q in itertools.pairwise(ctx)}
            if len(gaps) == 1:
                conv = torch.nn.Conv1d(cin, cout, len(ctx), dilation=gaps.pop())
                variants["dilated Conv1d"] = lambda x=x, conv=conv: conv(x)
                params += list(conv.parameters())
            r = compare(variants, [x], params, reps)
            speedup = r["unfold/splice"] / r["TimeDelay"]
            record(f"context {ctx} vs unfold", f"B{b} {cin}->{cout} T{t}", ">= 2x", speedup,
                   speedup >= 2.0, r)
            if "dilated Conv1d" in r:
                rr = r["TimeDelay"] / r["dilated Conv1d"]
                record(f"context {ctx} vs dilated Conv1d", f"B{b} {cin}->{cout} T{t}",
                       "<= 1.1", rr, rr <= 1.1, r)

    # 4. Locally connected vs. a naive loop over positions.
    lt = 100 if args.quick else 150
    x = torch.randn(b, 40, lt, requires_grad=True)
    lc = LocallyConnected1d(40, 64, lt, window=5)
    r = compare({"LocallyConnected1d": lambda: lc(x), "naive loop": lambda: naive_local1d(x, lc)},
                [x], list(lc.parameters()), max(3, reps // 2))
    sp = r["naive loop"] / r["LocallyConnected1d"]
    record("LocallyConnected1d vs loop", f"B{b} 40->64 T{lt} K5", "> 1x", sp, sp > 1.0, r)
    x = torch.randn(b, 6, 14, 14, requires_grad=True)
    lc2 = LocallyConnected2d(6, 16, 14, 5)
    r = compare({"LocallyConnected2d": lambda: lc2(x),
                 "naive loop": lambda: naive_local2d(x, lc2)},
                [x], list(lc2.parameters()), max(3, reps // 2))
    sp = r["naive loop"] / r["LocallyConnected2d"]
    record("LocallyConnected2d vs loop", f"B{b} 6->16 14x14 k5", "> 1x", sp, sp > 1.0, r)

    result = {"benchmark": "bench_time_delay", "machine": machine(), "repeats": reps,
              "timing": "forward + backward (gradients of input, weight and bias), interleaved "
                        "rounds, median per variant, thread CPU time (1 torch thread)",
              "seconds": round(time.perf_counter() - start, 1),
              "quick": args.quick, "rows": rows,
              "all_goals_met": all(r["meets_goal"] for r in rows)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}; goals met: {sum(r['meets_goal'] for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
