"""Ties under DDP and FSDP2: torchrun with 2 processes on gloo, compared with one process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import tying
from tying.distributed import check_fsdp_units, plan_fsdp_units

from .torchrun_util import run_torchrun

WORKERS = Path(__file__).parent / "workers"
sys.path.insert(0, str(WORKERS))
import common  # noqa: E402


@pytest.mark.distributed
def test_ddp_tied_gradients_equal_a_single_process(tmp_path):
    ranks = run_torchrun(WORKERS / "ddp_worker.py", tmp_path)
    for kind in ("gpt", "autoencoder", "albert"):
        ref = torch.tensor(common.reference(kind))
        for r in ranks:
            got = torch.tensor(r[kind]["params"])
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6,
                                       msg=lambda m, k=kind: f"{k}: {m}")
            assert r[kind]["groups"] >= 1


@pytest.mark.distributed
def test_fsdp2_keeps_tied_parameters_in_one_unit(tmp_path):
    ranks = run_torchrun(WORKERS / "fsdp_worker.py", tmp_path)
    for kind in ("gpt", "albert"):
        ref = torch.tensor(common.reference(kind))
        for r in ranks:
            rep = r[kind]
            assert "split across FSDP units" in rep["split_error"]
            assert not rep["wrapped_before_check"]
            torch.testing.assert_close(torch.tensor(rep["params"]), ref, rtol=1e-5, atol=1e-6)
    gpt, albert = ranks[0]["gpt"], ranks[0]["albert"]
    assert [d[0] for d in gpt["dropped"]] == ["head"]  # tied to the root's embedding
    assert ["blocks.0", "blocks.2"] in albert["groups"]  # cycle order: 0,1,0,1
    assert ["blocks.1", "blocks.3"] in albert["groups"]


def test_check_fsdp_units_names_the_split_tie():
    model = common.build("gpt")
    with pytest.raises(tying.TieError, match=r"'embed.weight' is tied across FSDP units.*"
                                             r"head.weight in unit 'head'"):
        check_fsdp_units(model, [model.head])
    check_fsdp_units(model, list(model.blocks))  # blocks hold no tie: fine


def test_plan_merges_units_that_share_and_leaves_unrelated_ones():
    model = common.build("albert")
    plan = plan_fsdp_units(model, [*model.blocks, model.head])
    assert sorted(plan.groups) == [("blocks.0", "blocks.2"), ("blocks.1", "blocks.3"),
                                   ("head",)]
    assert plan.dropped == ()
    with pytest.raises(ValueError, match="not a submodule"):
        plan_fsdp_units(model, [nn.Linear(2, 2)])
