"""How much a model stores: unique vs. virtual parameters and bytes, per tie group.

*Virtual* counts every parameter name as if it had its own tensor (what an untied model of
the same architecture stores); *unique* counts each tensor once (what is really in memory).

>>> import torch.nn as nn, tying
>>> enc = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))
>>> _ = tying.tie(enc, {"*": "0"})
>>> fp = tying.footprint(enc)
>>> fp.unique_params, fp.virtual_params, fp.sharing_ratio
(72, 288, 4.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .hard import TieGroup, logical_parameters, ties

__all__ = ["Footprint", "footprint"]


@dataclass(frozen=True)
class Footprint:
    """The result of `footprint`.

    Attributes:
        unique_params: elements in distinct Parameter tensors.
        virtual_params: elements summed over every parameter name.
        unique_bytes, virtual_bytes: the same in bytes (by each tensor's dtype). Distinct
            Parameters over the very same memory (a tie made with ``.data``) count once.
        buffer_bytes: bytes of buffers (running statistics and the like), not tied.
        groups: the tie groups, as `tying.ties` returns them.
    """

    unique_params: int
    virtual_params: int
    unique_bytes: int
    virtual_bytes: int
    buffer_bytes: int
    groups: tuple[TieGroup, ...]

    @property
    def saved_bytes(self) -> int:
        return self.virtual_bytes - self.unique_bytes

    @property
    def sharing_ratio(self) -> float:
        """virtual / unique parameters: 1.0 for a model without ties."""
        return self.virtual_params / self.unique_params if self.unique_params else 1.0

    def table(self) -> str:
        rows = [("group (canonical)", "names", "shape", "params", "saved bytes")]
        for g in self.groups:
            itemsize = g.dtype.itemsize
            rows.append((g.canonical, str(len(g.members)), "×".join(map(str, g.shape)),
                         f"{g.numel:,}", f"{g.numel * itemsize * (len(g.members) - 1):,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        summary = (f"unique {self.unique_params:,} params / {_human(self.unique_bytes)}; "
                   f"virtual {self.virtual_params:,} params / {_human(self.virtual_bytes)}; "
                   f"saved {_human(self.saved_bytes)} ({self.sharing_ratio:.2f}× sharing); "
                   f"buffers {_human(self.buffer_bytes)}")
        return "\n".join([*lines, summary]) if self.groups else f"no ties; {summary}"

    def __str__(self) -> str:
        return self.table()


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def footprint(model: nn.Module) -> Footprint:
    """Count ``model``'s unique and virtual parameters and bytes (see `Footprint`)."""
    seen_params: set[int] = set()
    seen_storage: set[tuple[str, int, int]] = set()
    unique_params = virtual_params = unique_bytes = virtual_bytes = 0
    for _, p, _ in logical_parameters(model):
        nbytes = p.numel() * p.element_size()
        virtual_params += p.numel()
        virtual_bytes += nbytes
        if id(p) in seen_params:
            continue
        seen_params.add(id(p))
        unique_params += p.numel()
        if p.device.type == "meta":
            unique_bytes += nbytes
            continue
        key = (str(p.device), p.data_ptr(), nbytes)  # distinct Parameters over one memory
        if key not in seen_storage:
            seen_storage.add(key)
            unique_bytes += nbytes
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    return Footprint(unique_params, virtual_params, unique_bytes, virtual_bytes, buffer_bytes,
                     tuple(ties(model)))
