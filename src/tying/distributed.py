"""Tied parameters under FSDP2: keep every tie group inside one FSDP unit.

FSDP2 (``torch.distributed.fsdp.fully_shard``) shards the parameters of each wrapped module as
one group. A tied Parameter reachable from two groups cannot be sharded twice: torch raises
at the second wrap, after the first has already changed the model. `check_fsdp_units` finds
such splits *before* anything is wrapped; `plan_fsdp_units` merges the units that share a tie
into one group; `fully_shard_tied` does both and wraps.

DDP needs no helper: a tied Parameter is one object, so DDP registers, reduces and updates it
once (tested with torchrun on gloo in ``tests/test_distributed.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn as nn

from .errors import TieError
from .hard import ties, verify

__all__ = ["FsdpPlan", "check_fsdp_units", "fully_shard_tied", "plan_fsdp_units"]


@dataclass(frozen=True)
class FsdpPlan:
    """How `plan_fsdp_units` groups the requested units.

    Attributes:
        groups: lists of module names; each list becomes one ``fully_shard([...])`` call.
        dropped: module names left to the root unit, with the reason.
    """

    groups: tuple[tuple[str, ...], ...]
    dropped: tuple[tuple[str, str], ...]


def _names(model: nn.Module, units: Sequence[nn.Module | str]) -> list[str]:
    by_id = {id(m): n for n, m in model.named_modules()}
    out = []
    for u in units:
        if isinstance(u, str):
            model.get_submodule(u)  # raises AttributeError naming the missing module
            name = u
        elif id(u) in by_id:
            name = by_id[id(u)]
        else:
            raise ValueError(f"unit {type(u).__name__} is not a submodule of the model")
        if name == "":
            raise ValueError("the root is always its own FSDP unit; list only submodules")
        out.append(name)
    return out


def _unit_of(param_name: str, units: list[str]) -> str:
    """The innermost unit containing ``param_name`` ('' = root)."""
    best = ""
    for u in units:
        if param_name.startswith(u + ".") and len(u) > len(best):
            best = u
    return best


def _split_groups(model: nn.Module, units: list[str],
                  merged: dict[str, str] | None = None) -> list[tuple[str, dict[str, list[str]]]]:
    """Tie groups whose members fall in different units (``merged`` maps a unit to the name of
    the group it is wrapped with)."""
    splits = []
    for group in ties(model):
        owners: dict[str, list[str]] = {}
        for name in group.names:
            unit = _unit_of(name, units)
            owners.setdefault((merged or {}).get(unit, unit), []).append(name)
        if len(owners) > 1:
            splits.append((group.canonical, owners))
    return splits


def check_fsdp_units(model: nn.Module, units: Sequence[nn.Module | str]) -> None:
    """Raise TieError if wrapping each of ``units`` with ``fully_shard`` would split a tie.

    Call before wrapping: a split found by torch happens half-way, with part of the model
    already sharded.
    """
    names = _names(model, units)
    splits = _split_groups(model, names)
    if splits:
        lines = []
        for canonical, owners in splits:
            where = "; ".join(f"{', '.join(ns)} in unit {u or '<root>'!r}"
                              for u, ns in owners.items())
            lines.append(f"{canonical!r} is tied across FSDP units: {where}")
        raise TieError("tied parameters would be split across FSDP units:\n  - "
                       + "\n  - ".join(lines)
                       + "\nWrap the tied modules together (tying.distributed.fully_shard_tied "
                         "merges them), or wrap their common ancestor instead.")


def plan_fsdp_units(model: nn.Module, units: Sequence[nn.Module | str]) -> FsdpPlan:
    """Group ``units`` so that no tie crosses a group: units sharing a tie are merged into one
    group; a unit tied to a parameter of the root (outside every unit) is left to the root."""
    names = _names(model, units)
    parent = {u: u for u in names}

    def find(u):
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    dropped: dict[str, str] = {}
    changed = True
    while changed:  # dropping a unit moves its params to its enclosing unit: repeat to a fixpoint
        changed = False
        kept = [u for u in names if u not in dropped]
        for canonical, owners in _split_groups(model, kept):
            if "" in owners:
                for u in owners:
                    if u and u not in dropped:
                        dropped[u] = f"tied to {canonical!r}, which the root unit holds"
                        changed = True
            else:
                us = list(owners)
                nested = [a for a in us for b in us if a != b and a.startswith(b + ".")]
                for a in nested:
                    if a not in dropped:
                        dropped[a] = f"tied to {canonical!r} in its enclosing unit"
                        changed = True
                for a in us[1:]:
                    if a not in nested and us[0] not in nested:
                        parent[find(a)] = find(us[0])
    groups: dict[str, list[str]] = {}
    for u in names:
        if u not in dropped:
            groups.setdefault(find(u), []).append(u)
    return FsdpPlan(tuple(tuple(g) for g in groups.values()), tuple(dropped.items()))


def fully_shard_tied(model: nn.Module, units: Sequence[nn.Module | str], *, mesh=None,
                     **fsdp_kwargs) -> FsdpPlan:
    """``fully_shard`` each unit (merged where ties require), then the root; ties kept.

    Args:
        model: the root module (it must implement ``forward``).
        units: the submodules to shard as separate units (e.g. the transformer blocks).
        mesh, fsdp_kwargs: passed to ``torch.distributed.fsdp.fully_shard``.

    Returns:
        The plan that was applied. Ties are verified after wrapping.
    """
    from torch.distributed.fsdp import fully_shard

    plan = plan_fsdp_units(model, units)
    merged = {u: g[0] for g in plan.groups for u in g}
    leftover = _split_groups(model, list(merged), merged)
    if leftover:  # the plan guarantees none; refuse rather than let torch fail half-way
        raise TieError(f"internal: plan still splits ties {[c for c, _ in leftover]}")
    wrapped = [[model.get_submodule(n) for n in g] for g in plan.groups]
    for modules in wrapped:
        fully_shard(modules if len(modules) > 1 else modules[0], mesh=mesh, **fsdp_kwargs)
    fully_shard(model, mesh=mesh, **fsdp_kwargs)
    verify(model)  # the parameters are DTensors now; FSDP2 keeps one object per tie
    return plan
