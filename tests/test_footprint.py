"""footprint(): unique vs. virtual parameters and bytes."""

from __future__ import annotations

import torch
import torch.nn as nn

import tying
from tying.models import SharedEncoder

from .test_hard import tied_ae, tied_lm


def test_counts_match_a_hand_count():
    lm = tied_lm()
    fp = tying.footprint(lm)
    by_hand_virtual = sum(p.numel() for _, p in lm.named_parameters(remove_duplicate=False))
    by_hand_unique = sum(p.numel() for p in lm.parameters())
    assert (fp.virtual_params, fp.unique_params) == (by_hand_virtual, by_hand_unique)
    assert fp.virtual_params - fp.unique_params == lm.embed.weight.numel()
    assert fp.unique_bytes == 4 * by_hand_unique
    assert fp.saved_bytes == 4 * lm.embed.weight.numel()


def test_transposed_ties_count_as_virtual_parameters():
    fp = tying.footprint(tied_ae())
    assert fp.virtual_params == 2 * 18 + 3 + 6
    assert fp.unique_params == 18 + 3 + 6


def test_albert_sharing_ratio_and_table():
    unshared = SharedEncoder(d_model=16, n_layers=6, n_unique=6, n_heads=2, vocab=10)
    shared = SharedEncoder(d_model=16, n_layers=6, n_unique=1, n_heads=2, vocab=10)
    a, b = tying.footprint(unshared), tying.footprint(shared)
    assert a.virtual_params == b.virtual_params
    block = sum(p.numel() for p in shared.blocks[0].parameters())
    assert a.unique_params - b.unique_params == 5 * block
    text = str(b)
    assert "blocks.0.qkv.weight" in text and "6.00× sharing" not in text
    assert f"{b.unique_params:,}" in text


def test_half_precision_bytes_and_buffers():
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).half()
    fp = tying.footprint(m)
    assert fp.unique_bytes == 2 * (16 + 4 + 4 + 4)
    assert fp.buffer_bytes == sum(b.numel() * b.element_size() for b in m.buffers())
    assert fp.groups == () and str(fp).startswith("no ties")


def test_a_tie_by_data_sharing_counts_once():
    a, b = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    b.weight.data = a.weight.data  # two Parameters, one memory
    fp = tying.footprint(nn.ModuleList([a, b]))
    assert fp.unique_params == 18 and fp.unique_bytes == 36
    assert torch.equal(a.weight, b.weight)
