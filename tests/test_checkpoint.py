"""tying.save / tying.load: unique tensors once, ties restored, atomic, transactional."""

from __future__ import annotations

import json
import os
import struct

import pytest
import safetensors.torch as st
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import tying
from tying.models import SharedEncoder, TinyGPT

from .test_hard import AutoEncoder, tied_ae, tied_lm


def snapshot(model: nn.Module):
    """Everything a failed load must leave alone: objects, values, records."""
    return ([(n, p, p.detach().clone()) for n, p in model.named_parameters(
        remove_duplicate=False)], {k: dict(tying.hard.records(m)) for k, m in
                                   model.named_modules()})


def assert_unchanged(model, snap):
    params, recs = snap
    now = list(model.named_parameters(remove_duplicate=False))
    assert [n for n, _ in now] == [n for n, _, _ in params]
    for (n, p), (_, p0, v0) in zip(now, params):
        assert p is p0, n
        assert torch.equal(p.detach(), v0), n
    assert {k: dict(tying.hard.records(m)) for k, m in model.named_modules()} == recs


def header(path) -> dict:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def test_save_stores_each_tied_tensor_once(tmp_path):
    lm = tied_lm()
    path = tmp_path / "lm.safetensors"
    tying.save(lm, path)
    tensors = st.load_file(path)
    assert "embed.weight" in tensors and "head.weight" not in tensors
    meta = header(path)["__metadata__"]
    assert json.loads(meta["tying.aliases"]) == {"head.weight": "embed.weight"}
    assert json.loads(meta["tying.ties"]) == [["head.weight", "embed.weight", None]]
    unique = tying.footprint(lm).unique_bytes + tying.footprint(lm).buffer_bytes
    data_bytes = os.path.getsize(path) - 8 - struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert data_bytes == unique


def test_round_trip_restores_values_and_ties_into_an_untied_model(tmp_path):
    lm = tied_lm()
    path = tmp_path / "lm.safetensors"
    tying.save(lm, path)
    fresh = TinyGPT(vocab=50, d_model=16, n_layers=2, n_heads=2, context=8,
                    tie_embeddings=False)
    tying.load(fresh, path)
    assert fresh.head.weight is fresh.embed.weight
    tying.verify(fresh)
    for (n, a), (_, b) in zip(lm.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), n


def test_round_trip_of_a_transposed_tie_and_shared_layers(tmp_path):
    ae = tied_ae()
    tying.save(ae, tmp_path / "ae.safetensors")
    fresh = AutoEncoder()
    tying.load(fresh, tmp_path / "ae.safetensors")
    tying.verify(fresh)
    assert fresh.dec.parametrizations.weight.original is fresh.enc.weight
    x = torch.randn(4, 6)
    torch.testing.assert_close(fresh(x), ae(x))
    enc = SharedEncoder(d_model=8, n_layers=6, n_unique=2, order="cycle", n_heads=2)
    tying.save(enc, tmp_path / "enc.safetensors")
    fresh_enc = SharedEncoder(d_model=8, n_layers=6, n_unique=6, n_heads=2)
    tying.load(fresh_enc, tmp_path / "enc.safetensors")
    assert tying.footprint(fresh_enc).unique_params == tying.footprint(enc).unique_params


def test_loads_checkpoints_without_the_tied_key(tmp_path):
    lm = tied_lm()
    # safetensors' own save_model drops one name of each shared pair
    st.save_model(lm, str(tmp_path / "sm.safetensors"))
    fresh = tied_lm()
    with torch.no_grad():
        fresh.embed.weight.zero_()
    tying.load(fresh, tmp_path / "sm.safetensors")
    assert torch.equal(fresh.embed.weight, lm.embed.weight)
    # an HF-style file: plain state_dict minus the tied output projection
    sd = {k: v.contiguous() for k, v in lm.state_dict().items() if k != "head.weight"}
    st.save_file(sd, tmp_path / "hf.safetensors")
    fresh = tied_lm()
    tying.load(fresh, tmp_path / "hf.safetensors")
    assert fresh.head.weight is fresh.embed.weight
    assert torch.equal(fresh.head.weight, lm.embed.weight)


@pytest.mark.parametrize("case", ["missing", "extra", "shape", "dtype_kind"])
def test_bad_files_raise_and_leave_the_model_unchanged(tmp_path, case):
    lm = tied_lm()
    sd = {k: v.clone() for k, v in lm.state_dict().items()}
    if case == "missing":
        del sd["ln.weight"]
        match = "lacks 1 tensor.*ln.weight"
    elif case == "extra":
        sd["bogus"] = torch.zeros(3)
        match = "does not have.*bogus"
    elif case == "shape":
        sd["ln.bias"] = torch.zeros(17)
        match = r"ln.bias.*\(17,\)"
    else:
        sd["ln.bias"] = torch.zeros(16, dtype=torch.int64)
        match = "int64"
    st.save_file(sd, tmp_path / "bad.safetensors")
    target = tied_lm(tie_embeddings=False)
    snap = snapshot(target)
    with pytest.raises(ValueError, match=match):
        tying.load(target, tmp_path / "bad.safetensors")
    assert_unchanged(target, snap)


def test_failed_load_undoes_the_ties_it_had_applied(tmp_path):
    ae = tied_ae()
    path = tmp_path / "ae.safetensors"
    tying.save(ae, path)
    tensors = st.load_file(path)
    tensors["enc.bias"] = torch.zeros(7)  # wrong shape, found after the tie was applied
    meta = header(path)["__metadata__"]
    st.save_file(tensors, path, metadata=meta)
    fresh = AutoEncoder()
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match=r"enc.bias"):
        tying.load(fresh, path)
    assert_unchanged(fresh, snap)
    assert not hasattr(fresh.dec, "parametrizations")
    assert type(fresh.dec) is nn.Linear


def test_corrupt_and_truncated_files_raise_value_error(tmp_path):
    lm = tied_lm()
    path = tmp_path / "lm.safetensors"
    tying.save(lm, path)
    raw = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    flipped[12] ^= 0xFF
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    (tmp_path / "empty.safetensors").write_bytes(b"")
    for name in ("trunc", "flip", "empty"):
        target = tied_lm()
        snap = snapshot(target)
        with pytest.raises(ValueError, match="not a readable safetensors"):
            tying.load(target, tmp_path / f"{name}.safetensors")
        assert_unchanged(target, snap)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=hs.integers(min_value=0), flip=hs.integers(min_value=0), bit=hs.integers(0, 7))
def test_any_damaged_file_gives_a_clear_error_or_loads_whole(tmp_path, cut, flip, bit):
    lm = tied_lm()
    path = tmp_path / "ok.safetensors"
    if not path.exists():
        tying.save(lm, path)
    raw = bytearray(path.read_bytes())
    raw[flip % len(raw)] ^= 1 << bit
    raw = raw[: len(raw) - cut % 64]
    bad = tmp_path / "damaged.safetensors"
    bad.write_bytes(bytes(raw))
    target = tied_lm()
    snap = snapshot(target)
    try:
        tying.load(target, bad)
    except (ValueError, tying.TieError):
        assert_unchanged(target, snap)
    else:  # a flip inside tensor data still loads: every tensor came from the file
        tying.verify(target)


def test_save_is_atomic(tmp_path, monkeypatch):
    lm = tied_lm()
    path = tmp_path / "lm.safetensors"
    tying.save(lm, path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        with open(args[1], "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        tying.save(lm, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm.safetensors"]


def test_metadata_is_kept_and_reserved_keys_refused(tmp_path):
    lm = tied_lm()
    tying.save(lm, tmp_path / "m.safetensors", metadata={"step": "10"})
    assert header(tmp_path / "m.safetensors")["__metadata__"]["step"] == "10"
    with pytest.raises(ValueError, match=r"tying."):
        tying.save(lm, tmp_path / "m.safetensors", metadata={"tying.format": "9"})


def test_newer_format_version_is_refused(tmp_path):
    lm = tied_lm()
    path = tmp_path / "m.safetensors"
    tying.save(lm, path)
    meta = header(path)["__metadata__"]
    meta["tying.format"] = "99"
    st.save_file(st.load_file(path), path, metadata=meta)
    with pytest.raises(ValueError, match="format '99'"):
        tying.load(tied_lm(), path)
