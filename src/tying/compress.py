"""Compression with a mixture prior, a real compressed file format, and the classic baselines.

`compress(model, prior)` merges coinciding components, sets each covered weight to the mean of
its most responsible component and prunes the zero component (Ullrich et al. 2017). The result,
a `Compressed`, is stored as Han et al. 2016 store Deep Compression: per tensor a codebook, the
non-zero positions in CSR form with *relative* indices (5 bits for fully connected, 8 bits for
convolutional tensors; a gap too long for the field is bridged with filler entries whose value
is zero), and both the codebook indices and the relative indices entropy-coded with a canonical
Huffman code. Everything not covered (biases, ...) is stored as float32 and counted.

>>> import torch, tying
>>> net = torch.nn.Linear(64, 32)
>>> prior = tying.MixturePrior(net, n_components=3, include="weight", init="kmeans")
>>> packed = tying.compress(net, prior)
>>> back = tying.Compressed.from_bytes(packed.to_bytes())
>>> torch.equal(back.state_dict()["weight"], packed.state_dict()["weight"])
True
>>> len(packed.state_dict()["weight"].unique()) <= 3
True

The file (little-endian), version 1::

    b"TYINGCMP" | u16 version | u32 header length H | H bytes of JSON header | payload | u32 CRC-32

The header lists each tensor (name, shape, kind, section sizes); the payload holds the sections
in header order. A model's persistent buffers (BatchNorm running statistics, ...) follow its
parameters as ``"kind": "buffer"`` entries (float32 for floating buffers, like the parameters;
int64 for integer and bool ones) and `Compressed.load_into` restores them; a model without
persistent buffers has none, so its file is what it was before buffers were stored.
Non-persistent buffers (index tables a module rebuilds itself) are not stored. The reader checks
every field against the file's real size and against caps before it allocates anything, so a
corrupt, truncated, wrong-version or hostile file raises `ValueError` (never a crash, never an
allocation sized by an unchecked field).

Why our own canonical Huffman coder: the alphabets are tiny (≤ 256 symbols), Han et al.'s ratio
is defined with Huffman coding, a canonical code is described by its code lengths alone (one byte
per symbol, no tree in the file), and ~100 lines of NumPy keep the format free of a compiled
dependency whose stream format could change under us. An ANS coder (``constriction``) would
save a fraction of a bit per symbol on these skewed streams; the file sizes here are dominated
by the number of non-zero entries, not by that fraction.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write_bytes
from .mixture import MixturePrior, kmeans_1d, most_responsible, select_parameters

__all__ = ["Compressed", "CompressionStats", "compress", "kmeans_quantize_",
           "magnitude_masks"]

MAGIC = b"TYINGCMP"
VERSION = 1
MAX_HEADER = 1 << 22          # 4 MiB of JSON header at most
MAX_PARAMS = 1 << 27          # default cap on all tensors together (512 MiB of float32)
MAX_CODEBOOK = 256            # entries of a codebook; entry 0 is zero (pruned weights, fillers)
_FIXED = len(MAGIC) + 2 + 4 + 4
_BUFFER_DTYPES = {"float32": "<f4", "int64": "<i8"}   # how buffers are stored


def _persistent_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """name → the model's buffers that belong in its ``state_dict`` (not the non-persistent)."""
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    return {n: t for n, t in model.state_dict(keep_vars=True).items()
            if n not in params and isinstance(t, torch.Tensor)}   # not a module's extra state


def _stored_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The persistent buffers as the file stores them: float32, or int64 (integers, bools)."""
    out = {}
    for name, buf in _persistent_buffers(model).items():
        if buf.is_floating_point():
            out[name] = buf.detach().to(torch.float32).cpu().clone()
        elif buf.dtype in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                           torch.int64):
            out[name] = buf.detach().to(torch.int64).cpu().clone()
        else:
            raise ValueError(f"buffer {name!r} has dtype {buf.dtype}, which a compressed file "
                             f"cannot store (float or integer buffers only); make it "
                             f"non-persistent (register_buffer(..., persistent=False)) if the "
                             f"module rebuilds it")
    return out


def _check_finite(name: str, w: torch.Tensor) -> None:
    if not torch.isfinite(w).all():
        raise ValueError(f"parameter {name!r} holds {int((~torch.isfinite(w)).sum())} NaN/inf "
                         f"values; a compressed file stores finite values only (fix the model "
                         f"first, e.g. retrain from a finite checkpoint)")


def _rel_bits_for(shape: tuple[int, ...]) -> int:
    """Han et al.: 8 bits for convolutional kernels, 5 bits for fully connected layers."""
    return 8 if len(shape) > 2 else 5


@dataclass
class _Quant:
    shape: tuple[int, ...]
    codebook: torch.Tensor    # (k,) float32, codebook[0] == 0 (pruned weights and fillers)
    index: torch.Tensor       # (numel,) int64 into the codebook
    rel_bits: int


@dataclass
class CompressionStats:
    """Sizes of a `Compressed` model.

    Attributes:
        n_params: every parameter (quantized + raw).
        n_quantized: parameters stored through a codebook.
        n_nonzero: non-zero quantized weights.
        nonzero_percent: 100 · n_nonzero / n_quantized.
        n_entries: CSR entries including fillers.
        bits_fixed: the count before entropy coding (Han et al.'s "P+Q"): entries ·
            (relative-index bits + ⌈log₂ k⌉) + 32 · k per codebook + 32 per raw parameter.
        bits_han: Han et al.'s count ("P+Q+H", the one their and Ullrich et al.'s ratios use):
            the same with both streams Huffman-coded, each tensor's relative indices and
            codebook indices with their own code (the code tables themselves not counted).
        ratio_fixed: 32 · n_params / bits_fixed.
        ratio_han: 32 · n_params / bits_han.
        file_bytes: the bytes of the real file (`Compressed.to_bytes`).
        ratio_file: 4 · n_params / file_bytes (float32 dense vs. our file).
        per_tensor: name → dict of the same quantities.

    Persistent buffers (BatchNorm statistics) are in the file, so in ``file_bytes``, but they
    are not parameters: they are left out of ``n_params`` and of the bit counts.

    Example:
        >>> net = torch.nn.Linear(4, 2, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, -0.5]]))
        >>> s = Compressed.from_model(net, quantized=["weight"]).stats
        >>> s.n_params, s.n_nonzero, s.nonzero_percent, s.bits_fixed  # 2·(5 + 2) + 32·3
        (8, 2, 25.0, 110)
    """

    n_params: int
    n_quantized: int
    n_nonzero: int
    nonzero_percent: float
    n_entries: int
    bits_fixed: int
    bits_han: int
    ratio_fixed: float
    ratio_han: float
    file_bytes: int
    ratio_file: float
    per_tensor: dict = field(default_factory=dict)


def _csr(index: np.ndarray, rel_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative positions (gaps) and codebook indices of the non-zero entries, with fillers."""
    pos = np.flatnonzero(index)
    span = 1 << rel_bits
    prev = np.concatenate([[-1], pos[:-1]])
    gaps = pos - prev - 1
    n_fill = gaps // span                       # fillers before each entry
    total = len(pos) + int(n_fill.sum())
    rel = np.full(total, span - 1, dtype=np.int64)
    idx = np.zeros(total, dtype=np.int64)
    at = np.arange(len(pos)) + np.cumsum(n_fill)  # where each real entry lands
    rel[at] = gaps - n_fill * span
    idx[at] = index[pos]
    return rel, idx


def _uncsr(rel: list[int], idx: list[int], numel: int, k: int, rel_bits: int) -> np.ndarray:
    rel_a = np.asarray(rel, dtype=np.int64)
    idx_a = np.asarray(idx, dtype=np.int64)
    if len(idx_a) and (idx_a.max() >= k or idx_a.min() < 0):
        raise ValueError("a codebook index is out of range")
    pos = np.cumsum(rel_a + 1) - 1
    if len(pos) and pos[-1] >= numel:
        raise ValueError(f"a CSR position ({int(pos[-1])}) is outside the tensor ({numel})")
    out = np.zeros(numel, dtype=np.uint8)   # k <= 256: one byte per weight
    out[pos] = idx_a
    return out


class Compressed:
    """A compressed model: quantized tensors (codebook + CSR + Huffman) and raw tensors.

    Build one with `compress` (mixture prior) or `Compressed.from_model` (any model whose chosen
    tensors hold few distinct values: k-means, Deep Compression); write it with `save`, read it
    with `load` / `from_bytes`, and put it back into a model with `load_into`. The model's
    persistent buffers (BatchNorm running statistics, ...) are stored with it.

    Example:
        >>> net = torch.nn.Linear(8, 4)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.tensor([0.0, 0.5, -0.5, 0.0]).repeat(8).view(4, 8))
        >>> c = Compressed.from_model(net, quantized=["weight"])
        >>> c.stats.n_nonzero, c.stats.n_params
        (16, 36)
    """

    def __init__(self, quant: dict[str, _Quant], raw: dict[str, torch.Tensor],
                 order: list[str], meta: dict | None = None,
                 buffers: dict[str, torch.Tensor] | None = None) -> None:
        self._quant = quant
        self._raw = raw
        self._order = list(order)
        self._buffers = dict(buffers or {})
        self.meta = dict(meta or {})     # read at every `to_bytes`: edits are always saved
        self._sections: tuple[list[dict], bytes] | None = None   # encoded tensors (cached)

    # ---------------------------------------------------------------- building
    @classmethod
    def from_model(cls, model: nn.Module, *, quantized=(), meta: dict | None = None
                   ) -> Compressed:
        """Store ``model``'s parameters; the names/globs in ``quantized`` through a codebook.

        Each quantized tensor must hold at most 256 distinct values (zero is always entry 0
        of its codebook and is not stored in the CSR). Every parameter must be finite
        (ValueError naming it otherwise). Persistent buffers are stored as they are.
        """
        names = [n for n, _ in model.named_parameters()]
        chosen = {n for n, _ in select_parameters(model, list(quantized), None)} \
            if quantized else set()
        quant, raw = {}, {}
        for n, p in model.named_parameters():
            w = p.detach().to(torch.float32).cpu()
            _check_finite(n, w)
            if n in chosen:
                vals = torch.unique(w)
                vals = vals[vals != 0]
                if len(vals) > MAX_CODEBOOK - 1:
                    raise ValueError(f"parameter {n!r} has {len(vals)} distinct non-zero "
                                     f"values; quantize it first (at most 255 + zero)")
                codebook = torch.cat([torch.zeros(1), vals])
                index = torch.bucketize(w.reshape(-1), vals) + 1
                index[w.reshape(-1) == 0] = 0
                quant[n] = _Quant(tuple(w.shape), codebook, index, _rel_bits_for(tuple(w.shape)))
            else:
                raw[n] = w.clone()
        return cls(quant, raw, names, meta, _stored_buffers(model))

    # ---------------------------------------------------------------- dense views
    def state_dict(self) -> dict[str, torch.Tensor]:
        """name → dense float32 tensor (quantized tensors decoded), then the persistent buffers
        (float32 or int64)."""
        out = {}
        for n in self._order:
            if n in self._quant:
                q = self._quant[n]
                out[n] = q.codebook[q.index.long()].reshape(q.shape).clone()
            else:
                out[n] = self._raw[n].clone()
        for n, b in self._buffers.items():
            out[n] = b.clone()
        return out

    def names(self) -> list[str]:
        """The parameter names, in the model's order (buffers not included)."""
        return list(self._order)

    @torch.no_grad()
    def load_into(self, model: nn.Module) -> nn.Module:
        """Write the (dense, decoded) values and the persistent buffers into ``model``; names and
        shapes must match first (nothing is written otherwise)."""
        params = dict(model.named_parameters())
        bufs = _persistent_buffers(model)
        missing = [n for n in self._order if n not in params] + \
            [n for n in self._buffers if n not in bufs]
        extra = [n for n in params if n not in self._quant and n not in self._raw] + \
            [n for n in bufs if n not in self._buffers]
        if missing or extra:
            hint = "" if not any(n in bufs for n in extra) else (
                "; the model's persistent buffers (e.g. BatchNorm statistics) are not in the "
                "file: compress the trained model again to store them")
            raise ValueError(f"the compressed file does not fit this model: missing in the model "
                             f"{missing[:5]}, not in the file {extra[:5]}{hint}")
        for n in self._order:
            shape = self._quant[n].shape if n in self._quant else tuple(self._raw[n].shape)
            if tuple(params[n].shape) != shape:
                raise ValueError(f"parameter {n!r}: the file has shape {shape}, the model "
                                 f"{tuple(params[n].shape)}")
        for n, b in self._buffers.items():
            if tuple(bufs[n].shape) != tuple(b.shape):
                raise ValueError(f"buffer {n!r}: the file has shape {tuple(b.shape)}, the model "
                                 f"{tuple(bufs[n].shape)}")
        for n, t in self.state_dict().items():
            target = bufs[n] if n in self._buffers else params[n]
            target.copy_(t.to(target.dtype))
        return model

    # ---------------------------------------------------------------- encoding
    def to_bytes(self) -> bytes:
        """The version-1 file as bytes (with the current ``meta``)."""
        if not isinstance(self.meta, dict):
            raise TypeError(f"meta must be a dict, got {type(self.meta).__name__}")
        if self._sections is None:
            self._sections = self._encode_tensors()
        tensors, payload = self._sections
        header = json.dumps({"tensors": tensors, "meta": self.meta},
                            separators=(",", ":")).encode()
        body = MAGIC + struct.pack("<HI", VERSION, len(header)) + header + payload
        return body + struct.pack("<I", zlib.crc32(body))

    def _encode_tensors(self) -> tuple[list[dict], bytes]:
        """The header's tensor entries and the payload (the costly part of `to_bytes`)."""
        tensors, payload = [], []
        for n in self._order:
            if n in self._raw:
                b = self._raw[n].contiguous().numpy().astype("<f4").tobytes()
                tensors.append({"name": n, "shape": list(self._raw[n].shape), "kind": "raw",
                                "nbytes": len(b)})
                payload.append(b)
                continue
            q = self._quant[n]
            k = int(q.codebook.numel())
            rel, idx = _csr(q.index.numpy().astype(np.int64), q.rel_bits)
            rl = _code_lengths(np.bincount(rel, minlength=1 << q.rel_bits))
            il = _code_lengths(np.bincount(idx, minlength=k))
            rel_s, idx_s = _encode(rel, rl), _encode(idx, il)
            cb = q.codebook.numpy().astype("<f4").tobytes()
            tensors.append({"name": n, "shape": list(q.shape), "kind": "csr",
                            "rel_bits": q.rel_bits, "k": k, "n_entries": len(rel),
                            "rel_nbytes": len(rel_s), "idx_nbytes": len(idx_s)})
            payload += [cb, bytes(rl), bytes(il), rel_s, idx_s]
        for n, buf in self._buffers.items():
            dtype = "float32" if buf.dtype == torch.float32 else "int64"
            b = buf.contiguous().numpy().astype(_BUFFER_DTYPES[dtype]).tobytes()
            tensors.append({"name": n, "shape": list(buf.shape), "kind": "buffer",
                            "dtype": dtype, "nbytes": len(b)})
            payload.append(b)
        return tensors, b"".join(payload)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the file atomically (temporary file in the same directory, then rename)."""
        return atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike, *, max_params: int = MAX_PARAMS) -> Compressed:
        """Read a file written by `save` (ValueError if it is not a valid version-1 file).

        ``max_params`` caps the parameters a file may declare (the decoded model is dense, so
        a tiny hostile file could otherwise ask for any amount of memory); raise it for models
        larger than 2²⁷ parameters.
        """
        return cls.from_bytes(Path(path).read_bytes(), max_params=max_params)

    @classmethod
    def from_bytes(cls, data: bytes, *, max_params: int = MAX_PARAMS) -> Compressed:
        """Parse and validate a version-1 file; ValueError for anything wrong with it."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _FIXED:
            raise ValueError(f"not a tying compressed file: {len(data)} bytes is too short")
        if data[:len(MAGIC)] != MAGIC:
            raise ValueError("not a tying compressed file (bad magic bytes)")
        version, hlen = struct.unpack_from("<HI", data, len(MAGIC))
        if version != VERSION:
            raise ValueError(f"unsupported compressed-file version {version}; this tying reads "
                             f"version {VERSION}")
        (crc,) = struct.unpack_from("<I", data, len(data) - 4)
        if zlib.crc32(data[:-4]) != crc:
            raise ValueError("compressed file is corrupt or truncated (CRC-32 mismatch)")
        start = len(MAGIC) + 6
        if hlen > MAX_HEADER or start + hlen > len(data) - 4:
            raise ValueError(f"header length {hlen} exceeds the file")
        try:
            header = json.loads(data[start:start + hlen].decode("utf-8"))
        except (ValueError, RecursionError) as e:   # bad UTF-8/JSON, huge ints, deep nesting
            raise ValueError(f"compressed file header is not valid JSON: "
                             f"{type(e).__name__}: {str(e)[:200]}") from None
        return cls._parse(header, memoryview(data)[start + hlen:len(data) - 4], int(max_params))

    @classmethod
    def _parse(cls, header, payload: memoryview, max_params: int) -> Compressed:
        def fail(msg):
            raise ValueError(f"invalid compressed file: {msg}")

        def get_int(d, key, lo, hi):
            v = d.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                fail(f"field {key!r} must be an int in [{lo}, {hi}], got {v!r}")
            return v

        if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
            fail("the header must be an object with a 'tensors' list")
        meta = header.get("meta", {})
        if not isinstance(meta, dict):
            fail("'meta' must be an object")
        quant, raw, buffers, order = {}, {}, {}, []
        pos, total = 0, 0
        n_bytes = len(payload)

        def take(nb):
            nonlocal pos
            if nb < 0 or pos + nb > n_bytes:
                fail(f"a section of {nb} bytes runs past the end of the payload ({n_bytes})")
            out = payload[pos:pos + nb]
            pos += nb
            return out

        for t in header["tensors"]:
            if not isinstance(t, dict):
                fail("every tensor entry must be an object")
            name, shape, kind = t.get("name"), t.get("shape"), t.get("kind")
            if not isinstance(name, str) or not name or name in quant or name in raw \
                    or name in buffers:
                fail(f"bad or duplicate tensor name {name!r}")
            if not isinstance(shape, list) or len(shape) > 8 or not all(
                    isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= max_params
                    for s in shape):
                fail(f"tensor {name!r}: bad shape {shape!r}")
            numel = math.prod(shape)
            total += numel
            if total > max_params:
                fail(f"tensor {name!r}: {total} parameters in all exceed the reader's cap "
                     f"max_params={max_params} (raise it if the file is trusted)")
            if kind == "raw":
                nb = get_int(t, "nbytes", 0, n_bytes)
                if nb != 4 * numel:
                    fail(f"tensor {name!r}: {nb} bytes for {numel} float32 values")
                arr = np.frombuffer(take(nb), dtype="<f4").astype(np.float32)
                raw[name] = torch.from_numpy(arr.copy()).reshape(shape)
            elif kind == "csr":
                rel_bits = get_int(t, "rel_bits", 1, 8)
                k = get_int(t, "k", 1, MAX_CODEBOOK)
                n_entries = get_int(t, "n_entries", 0, numel)
                rel_nb = get_int(t, "rel_nbytes", 0, n_bytes)
                idx_nb = get_int(t, "idx_nbytes", 0, n_bytes)
                codebook = np.frombuffer(take(4 * k), dtype="<f4").astype(np.float32)
                if codebook[0] != 0 or not np.isfinite(codebook).all():
                    fail(f"tensor {name!r}: codebook must start with 0 and be finite")
                rl = list(take(1 << rel_bits))
                il = list(take(k))
                rel_s, idx_s = bytes(take(rel_nb)), bytes(take(idx_nb))
                rel = _decode(rel_s, rl, n_entries)
                idx = _decode(idx_s, il, n_entries)
                index = _uncsr(rel, idx, numel, k, rel_bits)
                quant[name] = _Quant(tuple(shape), torch.from_numpy(codebook.copy()),
                                     torch.from_numpy(index), rel_bits)
            elif kind == "buffer":
                dtype = t.get("dtype")
                if dtype not in _BUFFER_DTYPES:
                    fail(f"buffer {name!r}: dtype must be one of {sorted(_BUFFER_DTYPES)}, "
                         f"got {dtype!r}")
                item = np.dtype(_BUFFER_DTYPES[dtype]).itemsize
                nb = get_int(t, "nbytes", 0, n_bytes)
                if nb != item * numel:
                    fail(f"buffer {name!r}: {nb} bytes for {numel} {dtype} values")
                arr = np.frombuffer(take(nb), dtype=_BUFFER_DTYPES[dtype]).astype(dtype)
                buffers[name] = torch.from_numpy(arr.copy()).reshape(shape)
                continue                                   # buffers are not parameters
            else:
                fail(f"tensor {name!r}: unknown kind {kind!r}")
            order.append(name)
        if pos != n_bytes:
            fail(f"{n_bytes - pos} unread bytes after the last section")
        return cls(quant, raw, order, meta, buffers)

    # ---------------------------------------------------------------- sizes
    @property
    def stats(self) -> CompressionStats:
        file_bytes = len(self.to_bytes())
        n_params = n_q = n_nz = n_ent = bits = fixed = 0
        per = {}
        for n in self._order:
            if n in self._raw:
                m = self._raw[n].numel()
                n_params += m
                bits += 32 * m
                fixed += 32 * m
                per[n] = {"kind": "raw", "params": m, "bits_fixed": 32 * m, "bits_han": 32 * m}
                continue
            q = self._quant[n]
            m = q.index.numel()
            k = q.codebook.numel()
            nz = int((q.index != 0).sum())
            rel, idx = _csr(q.index.numpy().astype(np.int64), q.rel_bits)
            bf = len(rel) * (q.rel_bits + max(1, math.ceil(math.log2(k)))) + 32 * k
            b = _huffman_bits(rel, 1 << q.rel_bits) + _huffman_bits(idx, k) + 32 * k
            fixed += bf
            n_params += m
            n_q += m
            n_nz += nz
            n_ent += len(rel)
            bits += b
            per[n] = {"kind": "csr", "params": m, "nonzero": nz, "entries": len(rel),
                      "codebook": k, "rel_bits": q.rel_bits, "bits_fixed": bf,
                      "bits_han": b, "ratio_han": 32 * m / max(b, 1)}
        for n, buf in self._buffers.items():   # in the file, not parameters: no bits counted
            per[n] = {"kind": "buffer", "elements": buf.numel(), "dtype": str(buf.dtype)}
        return CompressionStats(
            n_params=n_params, n_quantized=n_q, n_nonzero=n_nz,
            nonzero_percent=100.0 * n_nz / max(n_q, 1), n_entries=n_ent, bits_fixed=fixed,
            bits_han=bits, ratio_fixed=32.0 * n_params / max(fixed, 1),
            ratio_han=32.0 * n_params / max(bits, 1), file_bytes=file_bytes,
            ratio_file=4.0 * n_params / file_bytes, per_tensor=per)

    def __repr__(self) -> str:
        s = self.stats
        return (f"Compressed({len(self._order)} tensors, {s.n_params} params, "
                f"{s.nonzero_percent:.2f}% non-zero, ratio {s.ratio_han:.1f}× (Han), "
                f"{s.file_bytes} bytes)")


@torch.no_grad()
def compress(model: nn.Module, prior: MixturePrior | Sequence[MixturePrior], *,
             kl_threshold: float = 1e-2) -> Compressed:
    """Quantize the weights ``prior`` covers to its (merged) component means; prune zero.

    Args:
        model: the model the prior was built on (checked: same parameter objects).
        prior: a trained `MixturePrior`, or several (one mixture per layer) covering disjoint
            parameters.
        kl_threshold: components closer than this symmetric KL are merged first.

    Returns:
        A `Compressed`; ``compressed.load_into(model)`` makes ``model`` the quantized model.
        The model itself is not modified.

    Raises:
        ValueError: a prior has more than 255 non-zero components after merging: a codebook
            holds 256 entries and entry 0 is the pruned zero, so ``n_components`` ≤ 256 with
            the zero component, ≤ 255 without.

    Example:
        >>> net = torch.nn.Linear(32, 8)
        >>> packed = compress(net, MixturePrior(net, 4, include="weight"))
        >>> packed.stats.n_quantized
        256
    """
    priors = [prior] if isinstance(prior, MixturePrior) else prior
    if isinstance(priors, (str, bytes)) or not isinstance(priors, Sequence) or not priors \
            or not all(isinstance(p, MixturePrior) for p in priors):
        raise TypeError(f"prior must be a tying.MixturePrior or a non-empty sequence of them, "
                        f"got {type(prior).__name__}")
    owner: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for i, pr in enumerate(priors):
        pr.check_model(model)
        merged = pr.merged(kl_threshold)
        n_nonzero = int((merged[0].abs() >= 1e-12).sum())     # the same test as the pruning
        if n_nonzero > MAX_CODEBOOK - 1:
            which = "prior" if len(priors) == 1 else f"prior {i}"
            raise ValueError(
                f"{which} has n_components={pr.n_components}, {n_nonzero} of them non-zero "
                f"after merging, but a compressed codebook holds at most {MAX_CODEBOOK - 1} "
                f"non-zero values (entry 0 is the pruned zero): use n_components <= "
                f"{MAX_CODEBOOK} with the zero component (<= {MAX_CODEBOOK - 1} without), or "
                f"merge components (prior.merge_(kl_threshold), or a larger kl_threshold here)")
        for n, _ in pr.named_targets():
            if n in owner:
                raise ValueError(f"parameter {n!r} is covered by two of the priors; give each "
                                 f"prior its own parameters (include=/exclude=)")
            owner[n] = merged
    quant, raw = {}, {}
    n_comp = 0
    for n, p in model.named_parameters():
        w = p.detach().to(torch.float32).cpu()
        _check_finite(n, w)     # a diverged weight would take a component's mean silently
        if n not in owner:
            raw[n] = w.clone()
            continue
        mu, loglam, logpi = owner[n]
        n_comp = max(n_comp, int(mu.numel()))
        comp = most_responsible(w.double(), mu, loglam, logpi)
        values = mu[comp].float()
        values[values.abs() < 1e-12] = 0.0                  # the zero component: pruned
        used = torch.unique(values)
        used = used[used != 0]
        codebook = torch.cat([torch.zeros(1), used])
        index = torch.bucketize(values, used) + 1
        index[values == 0] = 0
        quant[n] = _Quant(tuple(w.shape), codebook, index, _rel_bits_for(tuple(w.shape)))
    return Compressed(quant, raw, [n for n, _ in model.named_parameters()],
                      {"method": "soft weight sharing", "components": n_comp,
                       "mixtures": len(priors)}, _stored_buffers(model))


# -------------------------------------------------------------------- Deep Compression pieces
@torch.no_grad()
def magnitude_masks(model: nn.Module, sparsity: float | dict[str, float], *,
                    include="*weight") -> dict[str, torch.Tensor]:
    """Han et al.'s pruning: per tensor, keep the largest-magnitude (1 − sparsity) weights.

    ``sparsity`` is a fraction in [0, 1), or ``{glob: fraction}`` (first matching glob wins).
    Returns name → bool mask (True = kept); apply it with ``p.mul_(mask)`` after each step.

    Example:
        >>> net = torch.nn.Linear(4, 1, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[0.1, -0.4, 0.2, 0.3]]))
        >>> magnitude_masks(net, 0.5)["weight"]
        tensor([[False,  True, False,  True]])
    """
    import fnmatch

    out = {}
    for n, p in select_parameters(model, include, None):
        if isinstance(sparsity, dict):
            s = next((v for g, v in sparsity.items() if fnmatch.fnmatchcase(n, g)), 0.0)
        else:
            s = sparsity
        if not 0.0 <= float(s) < 1.0:
            raise ValueError(f"sparsity for {n!r} must be in [0, 1), got {s}")
        k = round(float(s) * p.numel())
        if k == 0:
            out[n] = torch.ones_like(p, dtype=torch.bool)
            continue
        thr = p.detach().abs().reshape(-1).kthvalue(k).values
        out[n] = p.detach().abs() > thr
    return out


@torch.no_grad()
def kmeans_quantize_(model: nn.Module, bits: int | dict[str, int], *, include="*weight",
                     generator: torch.Generator | None = None) -> list[str]:
    """Per-tensor k-means (linear init, Han et al.) of the non-zero weights, in place.

    ``bits``: log₂ of the number of clusters, or ``{glob: bits}``; zeros stay zero. At 8 bits
    there are 255 clusters, not 256: a `Compressed` codebook keeps its entry 0 for the pruned
    zeros. Returns the quantized names (pass them to
    `Compressed.from_model(model, quantized=...)`).

    Example:
        >>> net = torch.nn.Linear(64, 64)
        >>> names = kmeans_quantize_(net, 3)
        >>> names, net.weight.unique().numel() <= 8
        (['weight'], True)
    """
    import fnmatch

    names = []
    for n, p in select_parameters(model, include, None):
        b = next((v for g, v in bits.items() if fnmatch.fnmatchcase(n, g)), 8) \
            if isinstance(bits, dict) else bits
        if not 1 <= int(b) <= 8:
            raise ValueError(f"bits for {n!r} must be in [1, 8], got {b}")
        w = p.detach().reshape(-1)
        nz = w != 0
        if nz.sum() == 0:
            names.append(n)
            continue
        c = kmeans_1d(w[nz], min(1 << int(b), 255), generator=generator).to(w.dtype)
        edges = (c[1:] + c[:-1]) / 2
        q = c[torch.bucketize(w[nz], edges)]
        q[q == 0] = torch.finfo(w.dtype).tiny                # keep "non-zero" non-zero
        new = torch.zeros_like(w)
        new[nz] = q
        p.copy_(new.view_as(p))
        names.append(n)
    return names


# -------------------------------------------------------------------- canonical Huffman
_HUFF_BITS = 16


def _code_lengths(counts: Sequence[int]) -> list[int]:
    """Huffman code lengths (0 for unused symbols), at most `_HUFF_BITS`, for symbol counts."""
    counts = [int(c) for c in counts]
    if len(counts) > 256:
        raise ValueError(f"at most 256 symbols, got {len(counts)}")
    used = [i for i, c in enumerate(counts) if c > 0]
    lengths = [0] * len(counts)
    if not used:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    work = {i: counts[i] for i in used}
    while True:
        heap = [(c, i, (i,)) for i, c in work.items()]
        heapq.heapify(heap)
        depth = dict.fromkeys(used, 0)
        tie = len(counts)
        while len(heap) > 1:
            c1, _, s1 = heapq.heappop(heap)
            c2, _, s2 = heapq.heappop(heap)
            for s in s1 + s2:
                depth[s] += 1
            heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
            tie += 1
        if max(depth.values()) <= _HUFF_BITS:
            break
        work = {i: max(1, c // 2) for i, c in work.items()}  # flatten the distribution
    for i, d in depth.items():
        lengths[i] = d
    return lengths


def _huffman_bits(symbols: np.ndarray, n_symbols: int) -> int:
    """Bits of ``symbols`` (ints in [0, n_symbols)) under their own Huffman code."""
    if len(symbols) == 0:
        return 0
    counts = np.bincount(symbols, minlength=n_symbols)
    return int(np.dot(counts, _code_lengths(counts)))


def _canonical(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """(code, length) per symbol; code 0 / length 0 for unused symbols."""
    order = sorted((ln, s) for s, ln in enumerate(lengths) if ln > 0)
    codes = [(0, 0)] * len(lengths)
    code, prev = 0, 0
    for ln, s in order:
        code <<= ln - prev
        codes[s] = (code, ln)
        code += 1
        prev = ln
    return codes


def _check_lengths(lengths: Sequence[int]) -> None:
    """ValueError unless ``lengths`` describe a prefix code (Kraft sum ≤ 1, lengths ≤ 16)."""
    if any(ln < 0 or ln > _HUFF_BITS for ln in lengths):
        raise ValueError(f"Huffman code lengths must be in [0, {_HUFF_BITS}]")
    kraft = sum(1 << (_HUFF_BITS - ln) for ln in lengths if ln > 0)
    if kraft > 1 << _HUFF_BITS:
        raise ValueError("Huffman code lengths do not describe a prefix code (Kraft sum > 1)")


def _encode(symbols, lengths: Sequence[int]) -> bytes:
    """Bit-pack ``symbols`` (ints) with the canonical code of ``lengths`` (MSB first)."""
    sym = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if sym.size == 0:
        return b""
    codes = _canonical(lengths)
    code_arr = np.array([c for c, _ in codes], dtype=np.int64)
    len_arr = np.array([ln for _, ln in codes], dtype=np.int64)
    if sym.min() < 0 or sym.max() >= len(lengths) or (len_arr[sym] == 0).any():
        raise ValueError("a symbol has no code (count it when building the lengths)")
    c, ln = code_arr[sym], len_arr[sym]
    shifts = np.arange(_HUFF_BITS - 1, -1, -1, dtype=np.int64)             # (16,)
    bits = (c[:, None] >> shifts[None, :]) & 1
    keep = np.arange(_HUFF_BITS)[None, :] >= (_HUFF_BITS - ln[:, None])      # the last ln columns
    return np.packbits(bits[keep].astype(np.uint8)).tobytes()


def _decode(data: bytes, lengths: Sequence[int], n: int) -> list[int]:
    """Decode ``n`` symbols; ValueError on an invalid or truncated bit stream."""
    _check_lengths(lengths)
    if n < 0:
        raise ValueError(f"negative symbol count {n}")
    if n > 8 * len(data):  # every symbol takes at least one bit: bound before any allocation
        raise ValueError(f"{n} symbols cannot fit in {len(data)} bytes")
    if n == 0:
        return []
    codes = _canonical(lengths)
    table_sym = np.full(1 << _HUFF_BITS, -1, dtype=np.int32)
    table_len = np.zeros(1 << _HUFF_BITS, dtype=np.int32)
    for s, (c, ln) in enumerate(codes):
        if ln:
            lo = c << (_HUFF_BITS - ln)
            table_sym[lo:lo + (1 << (_HUFF_BITS - ln))] = s
            table_len[lo:lo + (1 << (_HUFF_BITS - ln))] = ln
    ts, tl = table_sym.tolist(), table_len.tolist()
    total_bits = 8 * len(data)
    big = int.from_bytes(bytes(data) + b"\0\0\0", "big")
    width = total_bits + 24
    out = [0] * n
    pos = 0
    mask = (1 << _HUFF_BITS) - 1
    # peek 16 bits at a time from a Python int, in windows to keep shifts cheap
    win_start, window, win_bits = 0, 0, 0
    for k in range(n):
        if pos + _HUFF_BITS > win_start + win_bits:
            win_start = pos
            win_bits = min(width - pos, 4096)
            window = (big >> (width - pos - win_bits)) & ((1 << win_bits) - 1)
        peek = (window >> (win_start + win_bits - pos - _HUFF_BITS)) & mask
        s = ts[peek]
        if s < 0:
            raise ValueError(f"invalid Huffman code at bit {pos}")
        pos += tl[peek]
        if pos > total_bits:
            raise ValueError("truncated Huffman stream")
        out[k] = s
    return out
