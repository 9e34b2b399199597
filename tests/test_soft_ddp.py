"""SoftTie under DDP: every rank computes the same penalty on its replicated parameters, and
training with 2 gloo ranks (half the batch each) equals one process on the full batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from .torchrun_util import run_torchrun

WORKER = Path(__file__).parent / "workers" / "soft_ddp_worker.py"


@pytest.mark.distributed
def test_soft_tie_under_ddp_equals_single_process(tmp_path):
    ranks = run_torchrun(WORKER, tmp_path)
    for norm in ("l2sq", "l1", "group", "l2sq+direct"):    # +direct: penalty.backward()
        r0, r1 = ranks[0][norm], ranks[1][norm]
        assert r0["values"] == r1["values"]                     # replicated: bit-identical
        assert r0["params"] == r1["params"]
        assert r0["values"][0] > 0 and r0["values"][-1] != r0["values"][0]   # it trained
        for got, want in zip(r0["values"], r0["ref_values"]):
            assert got == pytest.approx(want, rel=1e-9)
        diff = max(abs(p - q) for p, q in zip(r0["params"], r0["ref_params"]))
        assert diff < 1e-9, f"{norm}: DDP parameters differ from one process by {diff}"
