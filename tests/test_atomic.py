"""tying.atomic: all-or-nothing writes whose files get ordinary permissions."""

import os
import stat

import pytest
import torch.nn as nn

import tying
from tying.atomic import atomic_path, atomic_write_bytes


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_file_gets_the_umask_mode_not_the_temporary_files(tmp_path, umask_022):
    path = atomic_write_bytes(tmp_path / "a.bin", b"abc")
    assert path.read_bytes() == b"abc"
    assert mode(path) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_replaced_file_keeps_its_mode(tmp_path, umask_022):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    path.chmod(0o640)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and mode(path) == 0o640


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_checkpoints_are_readable_by_others_under_a_022_umask(tmp_path, umask_022):
    model = nn.Linear(3, 2)
    tying.save(model, tmp_path / "m.safetensors")
    assert mode(tmp_path / "m.safetensors") == 0o644
