"""Meta-device construction: build big tied models without memory, then materialize them.

>>> import torch, torch.nn as nn, tying
>>> with torch.device("meta"):
...     lm = nn.ModuleDict({"embed": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
>>> _ = tying.tie(lm, {"head.weight": "embed.weight"})
>>> lm = tying.materialize(lm, "cpu")
>>> lm.head.weight is lm.embed.weight, lm.embed.weight.device.type
(True, 'cpu')
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .hard import retie, verify

__all__ = ["materialize"]


def _allocate(model: nn.Module, device: str | torch.device) -> None:
    """Give every unique Parameter and buffer uninitialized storage on ``device``, once.

    Unlike ``Module.to_empty``, which allocates one tensor per name (a tie's every copy, and
    so the whole *virtual* model at peak), each shared object is allocated once and assigned
    to all the names that hold it: ties stay ties and peak memory is the unique size.
    """
    new: dict[int, torch.Tensor] = {}
    keep = []  # the old objects stay alive until the end, so no id() is reused meanwhile
    for module in model.modules():
        for slots, is_param in ((module._parameters, True), (module._buffers, False)):
            for name, old in list(slots.items()):
                if old is None:
                    continue
                if id(old) not in new:
                    keep.append(old)
                    fresh = torch.empty_like(old, device=device)
                    new[id(old)] = nn.Parameter(fresh, old.requires_grad) if is_param else fresh
                slots[name] = new[id(old)]


def materialize(model: nn.Module, device: str | torch.device = "cpu", *,
                init: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """Allocate a meta-device model on ``device``, initialize it, and check its ties.

    ``Module.to_empty`` replaces every Parameter one name at a time, which silently turns each
    tie into separate tensors (and allocates the whole virtual model); this allocates each
    unique tensor once, keeps the ties, re-ties anything recorded but broken, and verifies.

    Args:
        model: a model built under ``torch.device("meta")`` (or any model: all values are
            re-initialized).
        device: where to allocate.
        init: called as ``init(model)`` to fill values (``lambda m: None`` when a checkpoint
            will be loaded next); default: ``reset_parameters()`` of every module that has one,
            descendants before ancestors. A tie's target takes its source's values.

    Returns:
        ``model``, in place.
    """
    _allocate(model, device)
    with torch.no_grad():
        if init is not None:
            init(model)
        else:
            # descendants before ancestors: a model's own reset_parameters has the last word
            for module in reversed(list(model.modules())):
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
    retie(model)
    verify(model)
    return model
