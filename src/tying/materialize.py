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


def materialize(model: nn.Module, device: str | torch.device = "cpu", *,
                init: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """Allocate a meta-device model on ``device``, initialize it, and re-establish its ties.

    ``Module.to_empty`` replaces every Parameter one name at a time, which silently turns each
    tie into two tensors; this function re-ties them from the record and verifies the result.

    Args:
        model: a model built under ``torch.device("meta")`` (or any model: all values are
            re-initialized).
        device: where to allocate.
        init: called as ``init(model)`` to fill values; default: ``reset_parameters()`` of every
            module that has one, descendants before ancestors. A tie's target takes its
            source's values.

    Returns:
        ``model``, in place.
    """
    model.to_empty(device=device)
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
