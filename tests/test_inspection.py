"""`tying inspect`: safetensors and weights-only torch files; pickles refused."""

from __future__ import annotations

import collections
import pickle

import pytest
import safetensors.torch as st
import torch
import torch.nn as nn

import tying
from tying.cli import main
from tying.inspection import inspect_file

from .test_hard import tied_lm


def test_tying_file_lists_aliases_and_ties(tmp_path, capsys):
    lm = tied_lm()
    path = tmp_path / "lm.safetensors"
    tying.save(lm, path)
    rep = inspect_file(path)
    assert rep.aliases == {"head.weight": "embed.weight"}
    assert rep.ties == [["head.weight", "embed.weight", None]]
    assert rep.unique_bytes == tying.footprint(lm).unique_bytes
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "head.weight" in out and "-> embed.weight" in out and "recorded ties" in out


def test_pt_file_with_shared_storage_and_duplicates(tmp_path):
    a = nn.Linear(4, 4)
    sd = {"a.weight": a.weight.detach(), "b.weight": a.weight.detach(),
          "c.weight": a.weight.detach().clone(), "bias": a.bias.detach()}
    torch.save(sd, tmp_path / "m.pt")
    rep = inspect_file(tmp_path / "m.pt", find_duplicates=True)
    assert rep.aliases == {"b.weight": "a.weight"}
    assert rep.duplicates == [(["a.weight", "c.weight"], 64)]
    assert rep.unique_bytes == 2 * 64 + 16


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_refused_not_run(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump(collections.OrderedDict(x=Evil()), f)
    with pytest.raises(ValueError, match="refuses"):
        inspect_file(path)
    assert "pwned" not in capsys.readouterr().out
    assert main(["inspect", str(path)]) == 2


def test_corrupt_and_missing_files(tmp_path, capsys):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        inspect_file(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError):
        inspect_file(tmp_path / "nope.safetensors")
    st.save_file({"x": torch.zeros(2)}, tmp_path / "plain.safetensors")
    assert inspect_file(tmp_path / "plain.safetensors").format == "safetensors"
