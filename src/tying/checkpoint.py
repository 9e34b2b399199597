"""Checkpoints that store each tied tensor once: safetensors plus the tie map in its metadata.

`save` writes every unique tensor once under its canonical name and records, in the header's
metadata, which other state_dict keys alias it and which ties were recorded. Writes are atomic
(temporary file, fsync, rename). `load` restores values *and* ties, and either succeeds or
leaves the model as it was. It also reads checkpoints whose tied keys are absent (as
``safetensors.torch.save_model`` and HF transformers write them).

>>> import os, tempfile, torch.nn as nn, tying
>>> lm = nn.ModuleDict({"embed": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
>>> _ = tying.tie(lm, {"head.weight": "embed.weight"})
>>> path = os.path.join(tempfile.mkdtemp(), "lm.safetensors")
>>> tying.save(lm, path)
>>> fresh = nn.ModuleDict({"embed": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
>>> tying.load(fresh, path).head.weight is fresh.embed.weight
True
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from .atomic import atomic_path
from .errors import TieError
from .hard import _RECORDS_ATTR, TieRecord, _all_records, records, tie

__all__ = ["FORMAT_VERSION", "load", "read_checkpoint", "save"]

FORMAT_VERSION = "1"
_META_FORMAT = "tying.format"
_META_ALIASES = "tying.aliases"  # {state_dict key: canonical key stored in the file}
_META_TIES = "tying.ties"  # [[target, source, transform], ...] recorded on the root


def _state_groups(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(unique tensors by canonical key, alias key -> canonical key) of model.state_dict()."""
    state = model.state_dict(keep_vars=True)
    recorded_sources = {(p + "." if p else "") + r.source
                        for p, _, r in _all_records(model) if r.external is None}
    by_identity: dict[tuple, list[str]] = {}
    for key, tensor in state.items():
        ident = (id(tensor),) if isinstance(tensor, nn.Parameter) else (
            "buf", tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        by_identity.setdefault(ident, []).append(key)
    unique, aliases = {}, {}
    for keys in by_identity.values():
        keys.sort(key=lambda k: (k not in recorded_sources, "parametrizations." in k))
        canonical = keys[0]
        unique[canonical] = state[canonical]
        aliases.update({k: canonical for k in keys[1:]})
    return unique, aliases


def save(model: nn.Module, path: str | os.PathLike, *,
         metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model``'s state to a safetensors file, each tied tensor once.

    Args:
        model: the module; its recorded ties (on the root) are written too.
        path: the file; written atomically (a crash never leaves a half-written file).
        metadata: extra string metadata (keys must not start with ``tying.``).
    """
    from safetensors.torch import save_file

    extra = dict(metadata or {})
    bad = [k for k in extra if not isinstance(k, str) or k.startswith("tying.")
           or not isinstance(extra[k], str)]
    if bad:
        raise ValueError(f"metadata keys must be str not starting with 'tying.', values str; "
                         f"offending keys: {bad}")
    unique, aliases = _state_groups(model)
    tensors = {k: t.detach().contiguous() for k, t in unique.items()}
    # Distinct buffers/parameters that overlap in memory would make safetensors refuse; a
    # buffer that merely views a parameter is not a tie, so it is stored as its own copy.
    seen: dict[tuple[str, int], str] = {}
    for k, t in tensors.items():
        key = (str(t.device), t.untyped_storage().data_ptr())
        if key in seen and t.numel():
            tensors[k] = t.clone()
        seen[key] = k
    rec = [[r.target, r.source, r.transform] for r in _flat_records(model).values()]
    meta = {**extra, _META_FORMAT: FORMAT_VERSION, _META_ALIASES: json.dumps(aliases),
            _META_TIES: json.dumps(rec)}
    with atomic_path(path) as tmp:
        save_file({k: t.cpu() for k, t in tensors.items()}, tmp, metadata=meta)


def _flat_records(model: nn.Module) -> dict[str, TieRecord]:
    """Every recorded tie within ``model`` (not across models), with names from the root."""
    out = {}
    for prefix, _, r in _all_records(model):
        if r.external is None:
            pre = f"{prefix}." if prefix else ""
            out[pre + r.target] = TieRecord(pre + r.target, pre + r.source, r.transform)
    return out


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a whole safetensors file: (tensors, metadata). Corrupt or truncated files raise
    ValueError."""
    from safetensors.torch import load_file

    path = Path(path)
    header = _FileHeader(path)  # validates before anything is allocated
    with _readable(path):
        tensors = load_file(path)
    return tensors, header.metadata


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
           "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


@contextlib.contextmanager
def _readable(path: Path):
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, OSError,
            RuntimeError) as err:
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated?): "
                         f"{err}") from None


class _FileHeader:
    """Names, shapes and dtypes of a safetensors file, read from its header alone (the
    library checks the header against the file size), so that a load can be validated
    before any tensor is read."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        self.path = path
        with _readable(path), safe_open(path, framework="pt") as f:
            self.metadata = dict(f.metadata() or {})
            self.shapes, self.dtypes = {}, {}
            for k in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                sl = f.get_slice(k)
                self.shapes[k] = tuple(sl.get_shape())
                self.dtypes[k] = _DTYPES.get(sl.get_dtype())
            unknown = [k for k, d in self.dtypes.items() if d is None]
            if unknown:
                raise ValueError(f"{path}: tensors of a dtype tying does not load: {unknown[:5]}")

    def __contains__(self, name: str) -> bool:
        return name in self.shapes

    def names(self) -> set[str]:
        return set(self.shapes)


def _file_ties(path: Path, meta: Mapping[str, str]) -> tuple[dict[str, str], list[TieRecord]]:
    if _META_FORMAT not in meta:
        return {}, []  # written by someone else: no aliases, no ties
    if meta[_META_FORMAT] != FORMAT_VERSION:
        raise ValueError(f"{path} has tying format {meta[_META_FORMAT]!r}; this version reads "
                         f"{FORMAT_VERSION!r}")
    try:
        aliases = json.loads(meta.get(_META_ALIASES, "{}"))
        recs = [TieRecord(t, s, tr) for t, s, tr in json.loads(meta.get(_META_TIES, "[]"))]
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: corrupt tying metadata: {err}") from None
    if not isinstance(aliases, dict):
        raise ValueError(f"{path}: corrupt tying metadata: aliases is not a mapping")
    return aliases, recs


def load(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Load values and ties from ``path`` into ``model``; on any error the model is unchanged.

    Args:
        model: a module of the same architecture (tied or not: the file's ties are applied).
        path: a file written by `save`, or any safetensors state_dict (keys of tied parameters
            may be absent; the model's own ties fill them).
        strict: refuse files with tensors the model lacks (missing tensors always raise).

    Returns:
        ``model``.
    """
    path = Path(path)
    tensors = _FileHeader(path)
    aliases, file_recs = _file_ties(path, tensors.metadata)
    for alias, canonical in aliases.items():
        if canonical not in tensors:
            raise ValueError(f"{path}: alias {alias!r} points at {canonical!r}, which the file "
                             f"does not hold (corrupt tie map)")
    own = _flat_records(model)
    conflicts = [f"{r.target!r}: the file ties it to {r.source!r}, the model to "
                 f"{own[r.target].source!r}" for r in file_recs if r.target in own and
                 (own[r.target].source, own[r.target].transform) != (r.source, r.transform)]
    if conflicts:
        raise TieError(f"{path} records ties that contradict the model's: {conflicts}")
    new_recs = [r for r in file_recs if r.target not in own]
    snapshot = _snapshot_structure(model)
    try:
        # 1. the file's ties (structure only; values are copied after every check passed)
        by_transform: dict[str | None, dict[str, str]] = {}
        for r in new_recs:
            by_transform.setdefault(r.transform, {})[r.target] = r.source
        for transform, mapping in by_transform.items():
            tie(model, mapping, transform=transform)
        # 2. a value for every state_dict key: its own, an alias's, or a tied sibling's
        state = model.state_dict(keep_vars=True)
        siblings: dict[int, list[str]] = {}
        for key, t in state.items():
            siblings.setdefault(id(t), []).append(key)
        values, missing, used = {}, [], set()
        for key, t in state.items():
            candidates = [key] + [k for k in siblings[id(t)] if k != key]
            name = next((aliases.get(k, k) for k in candidates
                         if aliases.get(k, k) in tensors), None)
            if name is None:
                missing.append(key)
                continue
            used.add(name)
            shape, dtype = tensors.shapes[name], tensors.dtypes[name]
            if shape != tuple(t.shape):
                raise ValueError(f"{path}: {name!r} has shape {shape} in the file, "
                                 f"the model's {key!r} has {tuple(t.shape)}")
            if dtype.is_floating_point != t.is_floating_point():
                raise ValueError(f"{path}: {name!r} is {dtype} in the file, the model's "
                                 f"{key!r} is {t.dtype}")
            values.setdefault(id(t), (key, name))  # a tied tensor is filled once
        if missing:
            raise ValueError(f"{path} lacks {len(missing)} tensor(s) the model needs: "
                             f"{missing[:10]}{' ...' if len(missing) > 10 else ''}")
        extra = sorted(tensors.names() - used)
        if extra and strict:
            raise ValueError(f"{path} holds {len(extra)} tensor(s) the model does not have: "
                             f"{extra[:10]} (pass strict=False to ignore them)")
    except BaseException:
        _restore_structure(model, snapshot)
        raise
    # 3. values, one tensor at a time (peak memory: the model plus its largest tensor); every
    # check has passed, so only an I/O error could interrupt the copies
    from safetensors import safe_open

    with _readable(path), safe_open(path, framework="pt") as f, torch.no_grad():
        for key, name in values.values():
            state[key].copy_(f.get_tensor(name))
    return model


def _snapshot_structure(model: nn.Module):
    """Which objects each module holds (no tensor data): enough to undo tie()."""
    return [(m, type(m), dict(m._parameters), dict(m._modules), dict(records(m)))
            for m in model.modules()]


def _restore_structure(model: nn.Module, snapshot) -> None:
    for module, cls, params, modules, recs in snapshot:
        module.__class__ = cls  # register_parametrization swaps in a subclass
        module._parameters.clear()
        module._parameters.update(params)
        module._modules.clear()
        module._modules.update(modules)
        object.__setattr__(module, _RECORDS_ATTR, recs)
