"""compress / Compressed: quantization with a prior, the file format, hostile files, baselines."""

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import tying
from tying.compress import (
    MAGIC,
    Compressed,
    _code_lengths,
    _csr,
    _decode,
    _encode,
    _uncsr,
    kmeans_quantize_,
    magnitude_masks,
)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def _packed():
    net = _model()
    prior = tying.MixturePrior(net, 5, include="*.weight", init="kmeans", pi_zero=0.5)
    return net, prior, tying.compress(net, prior)


def test_compress_quantizes_to_most_responsible_component_and_prunes_zero():
    net, prior, packed = _packed()
    mu, loglam, logpi = prior.merged()
    sd = packed.state_dict()
    for name in ("0.weight", "2.weight"):
        w = dict(net.named_parameters())[name].detach().double().reshape(-1)
        d = w.unsqueeze(1) - mu
        comp = (logpi + 0.5 * loglam - 0.5 * loglam.exp() * d * d).argmax(1)
        assert torch.allclose(sd[name].reshape(-1).double(), mu[comp].float().double())
    assert torch.equal(sd["0.bias"], net[0].bias.detach())           # biases raw, exact
    s = packed.stats
    assert s.n_nonzero == sum(int((sd[n] != 0).sum()) for n in ("0.weight", "2.weight"))
    assert s.n_params == sum(p.numel() for p in net.parameters())


def test_file_round_trip_outputs_equal_the_quantized_model(tmp_path):
    _, _, packed = _packed()
    quantized = packed.load_into(_model())
    path = packed.save(tmp_path / "m.tyc")
    assert path.stat().st_size == packed.stats.file_bytes
    loaded = Compressed.load(path).load_into(_model())
    x = torch.randn(7, 1, 8, 8)
    assert torch.equal(quantized(x), loaded(x))
    assert not list(tmp_path.glob(".*tmp"))                          # atomic: no leftovers


def test_han_ratio_formula_by_hand():
    net = nn.Linear(64, 1, bias=False)
    with torch.no_grad():
        w = torch.zeros(64)
        w[[0, 40]] = 0.5                                             # gap 39 > 31: one filler
        net.weight.copy_(w.view(1, 64))
    c = Compressed.from_model(net, quantized=["weight"])
    s = c.stats
    assert s.n_entries == 3 and s.n_nonzero == 2
    # before entropy coding: entries · (5 relative bits + ⌈log₂ 2⌉) + 32 · codebook(2)
    assert s.bits_fixed == 3 * (5 + 1) + 32 * 2
    assert s.ratio_fixed == pytest.approx(32 * 64 / s.bits_fixed)
    # Huffman-coded (Han's P+Q+H): relative indices [0, 31 (filler), 7] are three symbols
    # used once each (code lengths 1, 2, 2); codebook indices [1, 0, 1] take 1 bit each
    assert s.bits_han == (1 + 2 + 2) + 3 * 1 + 32 * 2
    assert s.ratio_han == pytest.approx(32 * 64 / s.bits_han)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=400), st.sampled_from([1, 3, 5, 8]))
def test_csr_round_trip_property(vals, rel_bits):
    index = np.array(vals, dtype=np.int64)
    rel, idx = _csr(index, rel_bits)
    assert (rel < (1 << rel_bits)).all()
    assert np.array_equal(_uncsr(rel.tolist(), idx.tolist(), len(index), 7, rel_bits), index)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=300))
def test_huffman_round_trip_property(vals):
    counts = np.bincount(vals, minlength=41)
    lengths = _code_lengths(counts)
    data = _encode(vals, lengths)
    assert _decode(data, lengths, len(vals)) == vals
    # never worse than a fixed-length code of ⌈log₂ 41⌉ = 6 bits per symbol (+ padding)
    assert len(data) <= (6 * len(vals) + 7) // 8 + 1


def test_huffman_lengths_capped_for_skewed_counts():
    counts = [2 ** i for i in range(30)]
    lengths = _code_lengths(counts)
    assert max(lengths) <= 16
    vals = list(range(30)) * 2
    assert _decode(_encode(vals, lengths), lengths, len(vals)) == vals


_BYTES = None


def _file_bytes():
    global _BYTES
    if _BYTES is None:
        _BYTES = _packed()[2].to_bytes()
    return _BYTES


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_truncations_and_byte_flips_raise_value_error(data):
    raw = bytearray(_file_bytes())
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(raw) - 1))
        bad = bytes(raw[:cut])
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
        bad = bytes(raw)
    assume(bad != _file_bytes())          # two flips of one byte may cancel
    with pytest.raises(ValueError):
        Compressed.from_bytes(bad)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_flips_behind_a_valid_crc_never_crash(data):
    # a hostile writer can fix the CRC: the parser must still reject or decode safely
    raw = bytearray(_file_bytes()[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(len(MAGIC) + 6, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    try:
        c = Compressed.from_bytes(_with_crc(bytes(raw)))
    except ValueError:
        return
    for t in c.state_dict().values():   # decoded: sizes come from validated fields
        assert t.numel() <= 1 << 27


def _hostile(header: dict, payload: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return _with_crc(MAGIC + struct.pack("<HI", 1, len(h)) + h + payload)


@pytest.mark.parametrize("header,match", [
    ({"tensors": [{"name": "w", "shape": [1 << 40], "kind": "raw", "nbytes": 4}]}, "shape"),
    ({"tensors": [{"name": "w", "shape": [1 << 20, 1 << 20], "kind": "raw", "nbytes": 0}]},
     "cap"),
    ({"tensors": [{"name": "w", "shape": [4], "kind": "raw", "nbytes": 16}]}, "nbytes"),
    ({"tensors": [{"name": "w", "shape": [100], "kind": "csr", "rel_bits": 5, "k": 2,
                   "n_entries": 10 ** 9, "rel_nbytes": 0, "idx_nbytes": 0}]}, "n_entries"),
    ({"tensors": [{"name": "w", "shape": [4], "kind": "zip"}]}, "kind"),
    ({"tensors": "all"}, "tensors"),
])
def test_hostile_headers_are_rejected_before_allocation(header, match):
    with pytest.raises(ValueError, match=match):
        Compressed.from_bytes(_hostile(header))


def test_wrong_version_and_magic():
    raw = bytearray(_file_bytes())
    raw[len(MAGIC)] = 9
    with pytest.raises(ValueError, match="version"):
        Compressed.from_bytes(bytes(raw))
    with pytest.raises(ValueError, match="magic"):
        Compressed.from_bytes(b"NOTMAGIC" + bytes(raw[8:]))
    with pytest.raises(ValueError, match="short"):
        Compressed.from_bytes(b"TY")


def test_load_into_a_mismatched_model_fails_without_writing():
    _, _, packed = _packed()
    other = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 11))
    before = [p.detach().clone() for p in other.parameters()]
    with pytest.raises(ValueError, match="shape"):
        packed.load_into(other)
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters(), strict=True))


def test_deep_compression_pieces():
    torch.manual_seed(0)
    net = nn.Linear(100, 50)
    masks = magnitude_masks(net, 0.9, include="weight")
    assert masks["weight"].float().mean().item() == pytest.approx(0.1, abs=0.01)
    with torch.no_grad():
        net.weight.mul_(masks["weight"])
    names = kmeans_quantize_(net, 3, include="weight")
    w = net.weight.detach()
    assert len(torch.unique(w[w != 0])) <= 8
    assert torch.equal(w != 0, masks["weight"])
    c = Compressed.from_model(net, quantized=names)
    assert c.stats.ratio_han > 5
    assert torch.equal(c.state_dict()["weight"], w)
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_masks(net, 1.0)
    with pytest.raises(ValueError, match="distinct"):
        Compressed.from_model(nn.Linear(100, 50), quantized=["weight"])
    # 8 bits: 255 clusters, so the codebook (entry 0 = zero) still fits the file
    torch.manual_seed(0)
    big = nn.Linear(200, 100)
    names = kmeans_quantize_(big, 8, include="weight")
    assert 200 < len(torch.unique(big.weight.detach())) <= 255
    assert Compressed.from_model(big, quantized=names).stats.ratio_han > 3


def test_docstring_examples_run():
    import doctest
    import importlib

    module = importlib.import_module("tying.compress")  # tying.compress is also a function
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_compress_with_one_mixture_per_layer():
    net = _model()
    priors = [tying.MixturePrior(net, 4, include=n, init="kmeans", pi_zero=0.5)
              for n in ("0.weight", "2.weight")]
    packed = tying.compress(net, priors)
    sd = packed.state_dict()
    for pr, n in zip(priors, ("0.weight", "2.weight"), strict=True):
        mu = pr.merged()[0].float()
        # every value of a layer comes from that layer's own mixture
        assert all(torch.isclose(mu, v).any() for v in sd[n].unique())
    assert packed.stats.n_quantized == 4 * 9 + 10 * 144
    with pytest.raises(ValueError, match="two of the priors"):
        tying.compress(net, [priors[0], tying.MixturePrior(net, 3, include="0.weight")])
    with pytest.raises(TypeError, match="sequence"):
        tying.compress(net, [])


def test_han_count_is_the_huffman_coded_streams_of_the_file():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    with torch.no_grad():
        for lin in (net[0], net[2]):   # 5% non-zero, 4 skewed shared values
            keep = torch.rand(lin.weight.shape, generator=g) < 0.05
            vals = torch.tensor([0.1, -0.1, 0.3, -0.5])[
                torch.multinomial(torch.tensor([0.6, 0.3, 0.07, 0.03]), lin.weight.numel(),
                                  replacement=True, generator=g)]
            lin.weight.copy_(vals.view_as(lin.weight) * keep)
    s = Compressed.from_model(net, quantized=["0.weight", "2.weight"]).stats
    # entropy coding only saves bits, and the file holds those streams plus tables and header
    assert s.bits_han < s.bits_fixed
    assert s.bits_han <= 8 * s.file_bytes < 1.1 * s.bits_han + 8 * 1024
    assert s.ratio_han > s.ratio_fixed
