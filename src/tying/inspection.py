"""`tying inspect FILE`: what a checkpoint holds, which tensors alias, and what could be tied.

Reads .safetensors directly and .pt/.pth/.bin with ``torch.load(weights_only=True)``: a file
that needs arbitrary unpickling is refused, never executed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["FileReport", "inspect_file"]


@dataclass
class FileReport:
    """What `inspect_file` found."""

    path: str
    format: str
    file_bytes: int
    tensors: list[tuple[str, tuple[int, ...], str, int]]  # name, shape, dtype, bytes
    unique_bytes: int
    aliases: dict[str, str]  # name -> the name whose tensor it shares
    ties: list[list]  # recorded ties [target, source, transform] (tying files)
    duplicates: list[tuple[list[str], int]] = field(default_factory=list)  # equal values, bytes

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.format}, {self.file_bytes:,} bytes on disk, "
                 f"{len(self.tensors)} tensors, {self.unique_bytes:,} unique tensor bytes"]
        width = max((len(n) for n, *_ in self.tensors), default=4)
        for name, shape, dtype, nbytes in self.tensors:
            alias = f"  -> {self.aliases[name]}" if name in self.aliases else ""
            lines.append(f"  {name.ljust(width)}  {'×'.join(map(str, shape)) or 'scalar':>14}  "
                         f"{dtype:>8}  {nbytes:>12,} B{alias}")
        if self.ties:
            lines.append("recorded ties (target <- source):")
            lines += [f"  {t} <- {s}{' (transposed)' if tr else ''}" for t, s, tr in self.ties]
        if self.duplicates:
            saved = sum(b for _, b in self.duplicates)
            lines.append(f"tensors with equal values that could be tied ({saved:,} bytes saved):")
            lines += [f"  {', '.join(names)}  ({b:,} B)" for names, b in self.duplicates]
        return "\n".join(lines)


def _load_pt(path: Path) -> dict[str, torch.Tensor]:
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} needs arbitrary unpickling, which `tying inspect` refuses "
                         f"(it could run code). Only tensors and plain containers are read. "
                         f"Detail: {str(err).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable torch file (corrupt or truncated?): "
                         f"{err}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path} holds no tensors")
    return tensors


def inspect_file(path: str | os.PathLike, find_duplicates: bool = False) -> FileReport:
    """Describe a checkpoint: tensors, unique bytes, aliased tensors, the tie map.

    Args:
        path: a .safetensors file, or a .pt/.pth/.bin state_dict (read with weights_only=True).
        find_duplicates: also group tensors whose values are equal (candidates for a tie).
    """
    from .checkpoint import _file_ties, read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    aliases: dict[str, str] = {}
    ties: list[list] = []
    with open(path, "rb") as f:
        head = f.read(8)
    is_safetensors = path.suffix == ".safetensors" or (
        len(head) == 8 and 0 < int.from_bytes(head, "little") < 100_000_000
        and not head.startswith(b"PK"))
    if is_safetensors:
        tensors, meta = read_checkpoint(path)
        aliases, recs = _file_ties(path, meta)
        ties = [[r.target, r.source, r.transform] for r in recs]
        fmt = "safetensors" + (f" (tying format {meta['tying.format']})"
                               if "tying.format" in meta else "")
    else:
        tensors = _load_pt(path)
        fmt = "torch (weights_only)"
        by_storage: dict[tuple, str] = {}
        for name, t in tensors.items():
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
                   tuple(t.stride()), t.dtype)
            if key in by_storage:
                aliases[name] = by_storage[key]
            else:
                by_storage[key] = name
    rows = [(n, tuple(t.shape), str(t.dtype).replace("torch.", ""), t.numel() * t.element_size())
            for n, t in tensors.items()]
    for alias, target in aliases.items():
        if alias not in tensors and target in tensors:
            t = tensors[target]
            rows.append((alias, tuple(t.shape), str(t.dtype).replace("torch.", ""), 0))
    unique = sum(b for n, _, _, b in rows if n not in aliases)
    report = FileReport(str(path), fmt, path.stat().st_size, rows, unique, aliases, ties)
    if find_duplicates:
        report.duplicates = _duplicates({n: t for n, t in tensors.items() if n not in aliases})
    return report


def _duplicates(tensors: dict[str, torch.Tensor]) -> list[tuple[list[str], int]]:
    buckets: dict[tuple, list[str]] = {}
    for name, t in tensors.items():
        if t.numel() == 0:
            continue
        buckets.setdefault((tuple(t.shape), t.dtype), []).append(name)
    out = []
    for names in buckets.values():
        groups: list[list[str]] = []
        for n in names:
            for g in groups:
                if torch.equal(tensors[g[0]], tensors[n]):
                    g.append(n)
                    break
            else:
                groups.append([n])
        for g in groups:
            if len(g) > 1:
                t = tensors[g[0]]
                out.append((g, t.numel() * t.element_size() * (len(g) - 1)))
    return out

