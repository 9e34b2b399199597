"""compress / Compressed: quantization with a prior, the file format, hostile files, baselines."""

import copy
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
    CompressionStats,
    _code_lengths,
    _csr,
    _decode,
    _encode,
    _uncsr,
    compress,
    kmeans_quantize_,
    magnitude_masks,
)
from tying.models import LeNet5
from tying.nn import HashedConv2d, HashedLinear


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
    # a hostile writer can fix the CRC: the parser must raise ValueError and nothing else
    raw = bytearray(_file_bytes()[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(len(MAGIC) + 6, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    error, c = None, None
    try:
        c = Compressed.from_bytes(_with_crc(bytes(raw)))
    except Exception as e:  # the property: any other exception type is a crash
        error = e
    if error is not None:
        assert isinstance(error, ValueError), f"{type(error).__name__}: {error}"
        return
    # a flipped file that still parses is a valid file: it re-encodes to the same tensors
    again = Compressed.from_bytes(c.to_bytes()).state_dict()
    first = c.state_dict()
    assert list(again) == list(first)
    assert all(again[n].numpy().tobytes() == first[n].numpy().tobytes() for n in first)


def _hostile(header: dict | bytes, payload: bytes = b"") -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
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
    (b"[" * 200_000, "header is not valid JSON: RecursionError"),        # json recursion
    (b'{"tensors":[],"meta":{"n":' + b"9" * 5000 + b"}}", "header is not valid JSON"),
    (b'{"tensors":[', "header is not valid JSON"),
    ({"tensors": [{"name": "b", "shape": [2], "kind": "buffer", "dtype": "float64",
                   "nbytes": 16}]}, "dtype"),
    ({"tensors": [{"name": "b", "shape": [1 << 40], "kind": "buffer", "dtype": "int64",
                   "nbytes": 0}]}, "shape"),
])
def test_hostile_headers_are_rejected_before_allocation(header, match):
    with pytest.raises(ValueError, match=match):
        Compressed.from_bytes(_hostile(header))


def test_hostile_buffer_entries_are_rejected():
    def entry(name, dtype, nbytes):
        return {"name": name, "shape": [2], "kind": "buffer", "dtype": dtype, "nbytes": nbytes}

    with pytest.raises(ValueError, match="8 bytes for 2 int64"):
        Compressed.from_bytes(_hostile({"tensors": [entry("b", "int64", 8)]}, b"\0" * 8))
    with pytest.raises(ValueError, match="duplicate"):
        Compressed.from_bytes(_hostile({"tensors": [entry("b", "float32", 8),
                                                    entry("b", "float32", 8)]}, b"\0" * 16))
    ok = Compressed.from_bytes(_hostile({"tensors": [entry("b", "int64", 16)]},
                                        struct.pack("<2q", -3, 1 << 40)))
    assert ok.state_dict()["b"].tolist() == [-3, 1 << 40] and ok.names() == []


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

    for name in ("tying.compress", "tying.nn.hashed"):   # tying.compress is also a function
        module = importlib.import_module(name)
        result = doctest.testmod(module,
                                 optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, name
    for obj in (Compressed, CompressionStats, compress, magnitude_masks, kmeans_quantize_,
                HashedLinear, HashedConv2d):
        assert "Example:" in obj.__doc__ and "\n        >>> " in obj.__doc__, obj.__name__


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


def test_compress_refuses_more_components_than_a_codebook_holds():
    torch.manual_seed(0)
    net = nn.Linear(64, 64)
    # a codebook has 256 entries and entry 0 is zero: 255 non-zero components at most
    with pytest.raises(ValueError, match=r"n_components=300, 299 .* at most 255 .*<= 256"):
        tying.compress(net, tying.MixturePrior(net, 300, include="weight"))
    with pytest.raises(ValueError, match=r"n_components=256, 256 .*merge"):
        tying.compress(net, tying.MixturePrior(net, 256, include="weight",
                                               zero_component=False))
    # the limit itself fits: 255 non-zero components + the zero one, and the file reads back
    packed = tying.compress(net, tying.MixturePrior(net, 256, include="weight"))
    assert packed.stats.per_tensor["weight"]["codebook"] > 128       # the limit is exercised
    back = Compressed.from_bytes(packed.to_bytes())
    assert torch.equal(back.state_dict()["weight"], packed.state_dict()["weight"])


def _bn_net(seed=0, track=True):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=track),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def test_persistent_buffers_are_stored_and_restored(tmp_path):
    net = _bn_net()
    with torch.no_grad():                       # train mode: the running statistics move
        for _ in range(3):
            net(torch.randn(16, 1, 8, 8) * 2 + 1)
    prior = tying.MixturePrior(net, 5, include=["0.weight", "4.weight"], init="kmeans",
                               pi_zero=0.5)
    x = torch.randn(5, 1, 8, 8)
    for packed in (tying.compress(net, prior), Compressed.from_model(net)):
        quantized = packed.load_into(copy.deepcopy(net)).eval()
        loaded = Compressed.load(packed.save(tmp_path / "bn.tyc")).load_into(_bn_net(1)).eval()
        assert torch.equal(quantized(x), loaded(x))
        bn = loaded[1]
        assert torch.equal(bn.running_mean, net[1].running_mean)
        assert torch.equal(bn.running_var, net[1].running_var)
        assert bn.num_batches_tracked.dtype == torch.int64 and bn.num_batches_tracked == 3
        s = packed.stats                        # buffers: in the file, not parameters
        assert s.n_params == sum(p.numel() for p in net.parameters())
        assert s.per_tensor["1.running_var"]["kind"] == "buffer"
    # a file without the statistics does not fit a model that has them, and vice versa
    plain = Compressed.from_model(_bn_net(track=False))
    with pytest.raises(ValueError, match=r"running_mean.*BatchNorm"):
        plain.load_into(_bn_net())
    with pytest.raises(ValueError, match=r"missing in the model.*running_mean"):
        Compressed.from_model(net).load_into(_bn_net(track=False))


class _Tabled(nn.Module):
    """A module with non-persistent buffers only (rebuilt by the module, not stored)."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = HashedLinear(6, 4, buckets=5, seed=2)
        self.register_buffer("table", torch.tensor([3, 1, 2, 0]), persistent=False)

    def forward(self, x):
        return self.lin(x)[:, self.table]


def _lenet5(seed):
    torch.manual_seed(seed)
    return LeNet5()


@pytest.mark.parametrize("make,shape", [(_Tabled, (3, 6)), (_lenet5, (2, 1, 32, 32))])
def test_non_persistent_buffers_are_not_stored_and_still_work(make, shape):
    net = make(0)
    assert len(list(net.named_buffers())) > 0
    c = Compressed.from_bytes(Compressed.from_model(net).to_bytes())
    assert list(c.state_dict()) == [n for n, _ in net.named_parameters()]
    other = make(1)
    x = torch.randn(*shape)
    assert not torch.equal(net(x), other(x))
    c.load_into(other)
    assert torch.equal(net(x), other(x))


# a version-1 file written before buffers were stored (Linear(8, 4), weight quantized)
_GOLDEN = bytes.fromhex(
    "5459494e47434d500100ca0000007b2274656e736f7273223a5b7b226e616d65223a22776569676874222c"
    "227368617065223a5b342c385d2c226b696e64223a22637372222c2272656c5f62697473223a352c226b22"
    "3a332c226e5f656e7472696573223a31362c2272656c5f6e6279746573223a332c226964785f6e62797465"
    "73223a327d2c7b226e616d65223a2262696173222c227368617065223a5b345d2c226b696e64223a227261"
    "77222c226e6279746573223a31367d5d2c226d657461223a7b226d6574686f64223a22676f6c64656e227d"
    "7d00000000000080be0000003f01020200000000000000000000000000000000000000000000000000000000"
    "000001019b6db6aaaa0000003e000080bf00000040000000008d181bda")


def test_buffer_free_files_are_byte_identical_and_old_files_load():
    net = nn.Linear(8, 4)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([0.0, 0.5, -0.25, 0.0]).repeat(8).view(4, 8))
        net.bias.copy_(torch.tensor([0.125, -1.0, 2.0, 0.0]))
    c = Compressed.from_model(net, quantized=["weight"], meta={"method": "golden"})
    assert c.to_bytes() == _GOLDEN
    old = Compressed.from_bytes(_GOLDEN)
    assert old.meta == {"method": "golden"}
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(),
                                                 c.state_dict().values(), strict=True))


def test_meta_edits_after_to_bytes_are_saved():
    c = Compressed.from_model(nn.Linear(3, 2), meta={"run": {"seed": 1}})
    first = c.stats.file_bytes                  # encodes (and caches) the tensors
    c.meta["note"] = "edited after stats"
    c.meta["run"]["seed"] = 2
    assert Compressed.from_bytes(c.to_bytes()).meta == {"run": {"seed": 2},
                                                        "note": "edited after stats"}
    assert c.stats.file_bytes == len(c.to_bytes()) > first
    c.meta = {"replaced": True}
    assert Compressed.from_bytes(c.to_bytes()).meta == {"replaced": True}
    c.meta = None
    with pytest.raises(TypeError, match="meta"):
        c.to_bytes()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name,quantized", [("bias", ["weight"]), ("weight", ["weight"]),
                                            ("weight", [])])
def test_from_model_refuses_non_finite_values(bad, name, quantized):
    net = nn.Linear(4, 2)
    with torch.no_grad():
        getattr(net, name).view(-1)[1] = bad
    with pytest.raises(ValueError, match=f"parameter '{name}' holds 1 NaN/inf"):
        Compressed.from_model(net, quantized=quantized)


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_compress_refuses_non_finite_values(name):
    net = nn.Linear(4, 2)
    prior = tying.MixturePrior(net, 3, include="weight")
    with torch.no_grad():
        getattr(net, name).view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=f"parameter '{name}' holds 1 NaN/inf"):
        tying.compress(net, prior)
