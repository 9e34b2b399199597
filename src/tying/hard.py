"""Hard ties: several names, one `nn.Parameter`, recorded so that a broken tie is found and mended.

A tie makes the *same* Parameter object appear under several names. PyTorch then stores,
updates and lists it once. Identity alone is fragile (`to_empty`, meta-device init,
`load_state_dict(assign=True)` and FSDP replace Parameters one name at a time), so every tie is
also recorded on the module it was made on (outside the state_dict): `verify` compares the
record with the model, `retie` re-establishes it.

>>> import torch.nn as nn, tying
>>> lm = nn.ModuleDict({"embed": nn.Embedding(100, 16), "head": nn.Linear(16, 100, bias=False)})
>>> tying.tie(lm, {"head.weight": "embed.weight"})
[TieRecord(target='head.weight', source='embed.weight', transform=None)]
>>> lm.head.weight is lm.embed.weight
True
>>> tying.footprint(lm).unique_params, tying.footprint(lm).virtual_params
(1600, 3200)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from .errors import TieError
from .names import fill_pattern, has_wildcard, match, suggest

__all__ = [
    "TieGroup",
    "TieRecord",
    "layer_sharing_order",
    "records",
    "retie",
    "share",
    "tie",
    "tie_layers",
    "ties",
    "untie",
    "verify",
]

_RECORDS_ATTR = "_tying_ties"
_TRANSFORMS = {None: None, "T": "T", "transpose": "T"}


class Transpose(nn.Module):
    """The parametrization of a transposed tie: the target reads ``source.T``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.t()

    def right_inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x.t()


@dataclass(frozen=True)
class TieRecord:
    """One recorded tie: ``target`` reads the Parameter at ``source`` (names relative to the
    module that holds the record). ``transform="T"`` means target = source.T. ``external`` is the
    module ``source`` lives in when the tie crosses models (`share`); None means the same module."""

    target: str
    source: str
    transform: str | None = None
    external: nn.Module | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class TieGroup:
    """Names that hold one Parameter. ``members`` lists (name, transform) pairs, canonical first."""

    canonical: str
    members: tuple[tuple[str, str | None], ...]
    shape: tuple[int, ...]
    dtype: torch.dtype
    numel: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.members)


# --------------------------------------------------------------------------- parameter access


def _split(name: str) -> tuple[str, str]:
    path, _, attr = name.rpartition(".")
    return path, attr


def _module(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root


def _is_transposed(module: nn.Module, attr: str) -> bool:
    return parametrize.is_parametrized(module, attr) and any(
        isinstance(p, Transpose) for p in module.parametrizations[attr])


def _get(root: nn.Module, name: str) -> nn.Parameter:
    """The Parameter stored at ``name`` (for a transposed target: the shared original)."""
    path, attr = _split(name)
    module = _module(root, path)
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original
    param = module._parameters.get(attr)
    if param is None:
        raise KeyError(name)
    return param


def _set(root: nn.Module, name: str, param: nn.Parameter) -> None:
    path, attr = _split(name)
    module = _module(root, path)
    if parametrize.is_parametrized(module, attr):
        module.parametrizations[attr].original = param
    else:
        setattr(module, attr, param)


def logical_parameters(root: nn.Module) -> list[tuple[str, nn.Parameter, str | None]]:
    """Every (name, Parameter, transform), duplicates included; a transposed tie's original
    is listed under the name the user sees (``decoder.weight``) with transform ``"T"``."""
    out = []
    for name, param in root.named_parameters(remove_duplicate=False):
        parts = name.split(".")
        if len(parts) >= 3 and parts[-3] == "parametrizations" and parts[-1] == "original":
            owner = _module(root, ".".join(parts[:-3]))
            logical = ".".join(parts[:-3] + parts[-2:-1])
            transform = "T" if _is_transposed(owner, parts[-2]) else None
            out.append((logical if transform else name, param, transform))
        else:
            out.append((name, param, None))
    return out


def _param_names(root: nn.Module) -> list[str]:
    return [n for n, _, _ in logical_parameters(root)]


# --------------------------------------------------------------------------- records


def records(module: nn.Module) -> dict[str, TieRecord]:
    """The ties recorded on ``module`` itself (target name -> record). Do not mutate."""
    return module.__dict__.get(_RECORDS_ATTR, {})


def _records_mut(module: nn.Module) -> dict[str, TieRecord]:
    recs = module.__dict__.get(_RECORDS_ATTR)
    if recs is None:
        recs = {}
        object.__setattr__(module, _RECORDS_ATTR, recs)
    return recs


def _all_records(root: nn.Module) -> list[tuple[str, nn.Module, TieRecord]]:
    """(prefix, holder, record) for every record on ``root`` and its submodules."""
    out = []
    for prefix, module in root.named_modules(remove_duplicate=False):
        for rec in records(module).values():
            out.append((prefix, module, rec))
    return out


# --------------------------------------------------------------------------- tie


def _check_compatible(target: str, t: torch.Tensor, source: str, s: torch.Tensor,
                      transform: str | None) -> None:
    want = tuple(s.shape[::-1]) if transform == "T" else tuple(s.shape)
    if transform == "T" and s.dim() != 2:
        raise ValueError(f"transform='T' needs a 2-D source; {source!r} has shape "
                         f"{tuple(s.shape)}")
    if tuple(t.shape) != want:
        how = " transposed" if transform == "T" else ""
        raise ValueError(f"cannot tie {target!r} (shape {tuple(t.shape)}) to{how} {source!r} "
                         f"(shape {tuple(s.shape)}): shapes must match"
                         + ("; did you mean transform='T'?" if tuple(t.shape) == tuple(
                             s.shape[::-1]) and transform is None else ""))
    if t.dtype != s.dtype:
        raise ValueError(f"cannot tie {target!r} ({t.dtype}) to {source!r} ({s.dtype}): dtypes "
                         f"differ; convert the model first (e.g. model.to({s.dtype}))")
    if t.device != s.device:
        raise ValueError(f"cannot tie {target!r} (on {t.device}) to {source!r} (on {s.device}):"
                         f" devices differ; move the model to one device first")


def _resolve(root: nn.Module, mapping: Mapping[str, str]) -> list[tuple[str, str]]:
    """Expand globs and module names into (target parameter, source parameter) pairs."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise TypeError(f"tie() takes a non-empty mapping {{target: source}}, got {mapping!r}")
    params = _param_names(root)
    param_set = set(params)
    modules = [n for n, _ in root.named_modules() if n]
    module_set = set(modules)
    pairs: list[tuple[str, str]] = []
    for target_pat, source_pat in mapping.items():
        if not isinstance(target_pat, str) or not isinstance(source_pat, str):
            raise TypeError(f"tie() names must be strings, got {target_pat!r}: {source_pat!r}")
        hits = match(target_pat, params)
        kind = "parameter"
        mod_hits = match(target_pat, modules)
        if mod_hits and (not hits or not has_wildcard(target_pat)):
            hits, kind = mod_hits, "module"
        if not hits:
            raise KeyError(f"{target_pat!r} matches no parameter or module of "
                           f"{type(root).__name__}.{suggest(target_pat, params + modules)}")
        if kind == "module":  # keep the outermost matches: blocks.1 rather than blocks.1.attn
            names = [h[0] for h in hits]
            hits = [h for h in hits if not any(h[0].startswith(o + ".") for o in names)]
        resolved = []
        for target, captures in hits:
            source = fill_pattern(source_pat, captures) if has_wildcard(source_pat) else \
                source_pat
            if source == target:
                if has_wildcard(target_pat) and not has_wildcard(source_pat):
                    continue  # "blocks.*" -> "blocks.0" skips blocks.0 itself
                raise TieError(f"cannot tie {target!r} to itself")
            resolved.append((target, source))
        if has_wildcard(source_pat):
            n_sources = len(match(source_pat, params if kind == "parameter" else modules))
            if n_sources != len(hits):
                raise ValueError(f"patterns match different counts: {target_pat!r} matches "
                                 f"{len(hits)} {kind}s, {source_pat!r} matches {n_sources}")
        for target, source in resolved:
            pool, pool_set = (params, param_set) if kind == "parameter" else (modules,
                                                                              module_set)
            if source not in pool_set:
                other = module_set if kind == "parameter" else param_set
                extra = (f" ({source!r} is a {'module' if kind == 'parameter' else 'parameter'};"
                         f" tie parameters to parameters and modules to modules)"
                         if source in other else suggest(source, pool))
                raise KeyError(f"source {source!r} (for {kind} {target!r}) is not a {kind} of "
                               f"{type(root).__name__}.{extra}")
            if kind == "parameter":
                pairs.append((target, source))
            else:
                pairs += _module_pairs(root, target, source)
    return pairs


def _module_pairs(root: nn.Module, target: str, source: str) -> list[tuple[str, str]]:
    t_mod, s_mod = _module(root, target), _module(root, source)
    t_names = _param_names(t_mod)
    s_names = _param_names(s_mod)
    if t_names != s_names:
        only_t = sorted(set(t_names) - set(s_names))
        only_s = sorted(set(s_names) - set(t_names))
        raise ValueError(f"modules {target!r} ({type(t_mod).__name__}) and {source!r} "
                         f"({type(s_mod).__name__}) differ in structure: only in target "
                         f"{only_t}, only in source {only_s}")
    return [(f"{target}.{n}", f"{source}.{n}") for n in t_names]


def _canonical(recs: Mapping[str, TieRecord], name: str, target: str) -> str:
    """Follow recorded ties from ``name`` to the name that owns the tensor."""
    seen = [name]
    while name in recs:
        if recs[name].transform is not None:
            raise TieError(f"{name!r} is itself a transposed tie of {recs[name].source!r}; "
                           f"tie {target!r} to {recs[name].source!r} instead")
        name = recs[name].source
        if name in seen:
            break
        seen.append(name)
    if name == target or target in seen:
        raise TieError(f"tying {target!r} to {seen[0]!r} would make a cycle: "
                       + " -> ".join([target, *seen]))
    return name


def tie(model: nn.Module, mapping: Mapping[str, str], *,
        transform: str | None = None) -> list[TieRecord]:
    """Make each target the same Parameter as its source, and record the tie on ``model``.

    Args:
        model: the root module; names are relative to it.
        mapping: ``{target: source}``. A name may be a parameter (``"lm_head.weight"``) or a
            module (``"blocks.3"``: every parameter of it, for modules of equal structure).
            ``*`` matches one dotted component and ``**`` any number; the source's wildcards are
            filled with the target's captures (``{"dec.*.weight": "enc.*.weight"}``), or a
            source without wildcards serves every target (``{"blocks.*": "blocks.0"}`` skips
            ``blocks.0`` itself).
        transform: ``None`` or ``"T"``: the target reads ``source.T`` through a parametrization
            (a tied autoencoder); one tensor is stored and gradients reach the source.

    Returns:
        The records made, one per tied parameter. The target's old values are discarded: after
        the call it reads the source's.

    Raises:
        KeyError: a name matches nothing (close names are suggested).
        ValueError: shapes, dtypes or devices differ; patterns match different counts.
        TieError: a self-tie, a cycle, or a target already tied elsewhere.

    Optimizers hold Parameter objects: create them after tying (`verify(model, optimizer)`
    reports one that still holds a replaced Parameter).
    """
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of None, 'T' (transpose); got {transform!r}")
    transform = _TRANSFORMS[transform]
    pairs = _resolve(model, mapping)
    recs = _records_mut(model)
    # Validate everything before changing anything: a failed tie leaves the model as it was.
    plan = []
    targets_seen = set()
    for target, source in pairs:
        if target in targets_seen:
            raise TieError(f"{target!r} is named twice as a target in one tie() call")
        targets_seen.add(target)
        canonical = _canonical(recs, source, target)
        old = recs.get(target)
        if old is not None and (old.source, old.transform) != (canonical, transform):
            raise TieError(f"{target!r} is already tied to {old.source!r}"
                           f"{' (transposed)' if old.transform else ''}; call "
                           f"tying.untie(model, {target!r}) first")
        t_param, s_param = _get(model, target), _get(model, canonical)
        if transform == "T" and not _is_transposed(*_owner(model, target)):
            t_value = t_param  # not yet parametrized: its own (out, in) tensor
        else:
            t_value = t_param.t() if transform == "T" else t_param
        _check_compatible(target, t_value, canonical, s_param, transform)
        dependents = [r for r in recs.values() if r.source == target]
        if dependents and transform == "T":
            raise TieError(f"{target!r} is the source of other ties "
                           f"({', '.join(r.target for r in dependents)}); a transposed target "
                           f"cannot be a source")
        plan.append((target, canonical, dependents))
    made = []
    for target, canonical, dependents in plan:
        source_param = _get(model, canonical)
        if transform == "T":
            module, attr = _owner(model, target)
            if not _is_transposed(module, attr):
                if parametrize.is_parametrized(module, attr):
                    raise TieError(f"{target!r} already has a parametrization; a transposed tie "
                                   f"needs a plain parameter")
                # register_parametrization rewrites the Parameter it finds in place (to its
                # transpose); hand it a throwaway copy so the caller's object stays intact.
                old_param = module._parameters[attr]
                module._parameters[attr] = nn.Parameter(old_param.detach().clone(),
                                                        old_param.requires_grad)
                parametrize.register_parametrization(module, attr, Transpose())
            module.parametrizations[attr].original = source_param
        else:
            _set(model, target, source_param)
        rec = TieRecord(target, canonical, transform)
        recs[target] = rec
        for dep in dependents:  # ties that pointed at target now point at its new source
            _set(model, dep.target, source_param)  # (a transposed dep: its original)
            recs[dep.target] = TieRecord(dep.target, canonical, dep.transform)
        made.append(rec)
    return made


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, attr = _split(name)
    return _module(root, path), attr


def share(source: nn.Module, *targets: nn.Module) -> list[TieRecord]:
    """Make every parameter of each target module the same Parameter as ``source``'s.

    For modules in different models (Siamese branches, a trunk shared by two task models):
    ``tying.share(model_a.encoder, model_b.encoder)``. The modules must have equal structure
    (names, shapes, dtypes, devices). The tie is recorded on each target module, so
    ``verify(model_b)`` checks it and ``retie(model_b)`` restores it.

    Returns:
        The records made on the targets.
    """
    if not isinstance(source, nn.Module) or not targets or not all(
            isinstance(t, nn.Module) for t in targets):
        raise TypeError("share(source, *targets) takes two or more nn.Module objects")
    s_params = dict((n, p) for n, p, tr in logical_parameters(source) if tr is None)
    for i, target in enumerate(targets):
        if target is source:
            raise TieError(f"share(): target {i} is the source module itself")
        t_params = dict((n, p) for n, p, tr in logical_parameters(target) if tr is None)
        if list(t_params) != list(s_params):
            raise ValueError(f"share(): target {i} ({type(target).__name__}) and the source "
                             f"({type(source).__name__}) differ in structure: only in target "
                             f"{sorted(set(t_params) - set(s_params))}, only in source "
                             f"{sorted(set(s_params) - set(t_params))}")
        for name, p in t_params.items():
            _check_compatible(f"target {i}: {name}", p, f"source: {name}", s_params[name], None)
    made = []
    for target in targets:
        recs = _records_mut(target)
        for name, p in s_params.items():
            _set(target, name, p)
            rec = TieRecord(name, name, None, external=source)
            recs[name] = rec
            made.append(rec)
    return made


# --------------------------------------------------------------------------- inspect / repair


def ties(model: nn.Module) -> list[TieGroup]:
    """The tie groups of ``model`` found by identity: ties made by `tie`, `share` or by hand.

    The canonical name of a group is the recorded source when there is one, else the first
    name in registration order.
    """
    groups: dict[int, list[tuple[str, str | None]]] = {}
    objects: dict[int, nn.Parameter] = {}
    for name, param, transform in logical_parameters(model):
        groups.setdefault(id(param), []).append((name, transform))
        objects[id(param)] = param
    sources = {prefix + ("." if prefix else "") + r.source
               for prefix, _, r in _all_records(model) if r.external is None}
    out = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        members.sort(key=lambda m: (m[0] not in sources or m[1] is not None))
        p = objects[key]
        out.append(TieGroup(members[0][0], tuple(members), tuple(p.shape), p.dtype, p.numel()))
    return out


def _source_param(holder: nn.Module, rec: TieRecord) -> nn.Parameter:
    return _get(rec.external if rec.external is not None else holder, rec.source)


def _problems(model: nn.Module) -> list[str]:
    problems = []
    for prefix, holder, rec in _all_records(model):
        where = f"{prefix}." if prefix else ""
        try:
            t = _get(holder, rec.target)
        except (KeyError, AttributeError):
            problems.append(f"{where}{rec.target!r}: recorded tie target no longer exists")
            continue
        try:
            s = _source_param(holder, rec)
        except (KeyError, AttributeError):
            problems.append(f"{where}{rec.target!r}: its source {rec.source!r} no longer exists")
            continue
        if rec.transform == "T" and not _is_transposed(*_owner(holder, rec.target)):
            problems.append(f"{where}{rec.target!r}: the transposed tie to {rec.source!r} lost "
                            f"its parametrization")
        elif t is not s:
            same = t.shape == s.shape and t.dtype == s.dtype and t.device == s.device and \
                t.device.type != "meta" and bool(torch.equal(t.detach(), s.detach()))
            src = f"{where}{rec.source}" if rec.external is None else \
                f"{rec.source} of the shared {type(rec.external).__name__}"
            problems.append(f"{where}{rec.target!r} is no longer the same Parameter as {src!r} "
                            f"(a {'copy with equal' if same else 'separate tensor with different'}"
                            f" values); call tying.retie(model)")
    return problems


def verify(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[TieGroup]:
    """Check every recorded tie (and, given one, that ``optimizer`` holds the model's Parameters).

    Returns:
        The tie groups (as `ties`), when everything holds.

    Raises:
        TieError: naming every broken or missing tie, and every Parameter the optimizer holds
            that the model no longer has (it was created before a tie or a `retie`).
    """
    problems = _problems(model)
    if optimizer is not None:
        live = {id(p) for _, p, _ in logical_parameters(model)}
        names = {id(p): n for n, p, _ in logical_parameters(model)}
        seen: dict[int, int] = {}
        for gi, group in enumerate(optimizer.param_groups):
            for pi, p in enumerate(group["params"]):
                if id(p) not in live:
                    problems.append(f"optimizer param_groups[{gi}]['params'][{pi}] (shape "
                                    f"{tuple(p.shape)}) is not a parameter of the model: the "
                                    f"optimizer was probably created before a tie; create it "
                                    f"after tying")
                elif id(p) in seen:
                    problems.append(f"optimizer holds {names[id(p)]!r} twice (groups "
                                    f"{seen[id(p)]} and {gi}): a tied parameter must be in one "
                                    f"group once")
                seen[id(p)] = gi
    if problems:
        raise TieError(f"{len(problems)} broken tie(s):\n  - " + "\n  - ".join(problems))
    return ties(model)


def retie(model: nn.Module) -> int:
    """Re-establish every recorded tie after PyTorch replaced Parameters (to_empty, meta init,
    load_state_dict(assign=True), ...). The recorded source keeps its tensor; the target's
    current tensor is dropped.

    Returns:
        How many ties had to be re-established.
    """
    fixes = []
    for prefix, holder, rec in _all_records(model):
        where = f"{prefix}." if prefix else ""
        try:
            s = _source_param(holder, rec)
            t = _get(holder, rec.target)
        except (KeyError, AttributeError) as err:
            raise TieError(f"cannot retie {where}{rec.target!r} to {rec.source!r}: "
                           f"{err.args[0]!r} no longer exists") from None
        transposed_ok = rec.transform != "T" or _is_transposed(*_owner(holder, rec.target))
        if t is s and transposed_ok:
            continue
        if rec.transform == "T" and not transposed_ok:
            raise TieError(f"cannot retie {where}{rec.target!r}: its transposed "
                           f"parametrization was removed; tie it again with tying.tie")
        t_view = t.t() if rec.transform == "T" else t
        _check_compatible(where + rec.target, t_view, where + rec.source, s, rec.transform)
        fixes.append((holder, rec.target, s))
    for holder, target, s in fixes:
        _set(holder, target, s)
    return len(fixes)


def untie(model: nn.Module, names: str | Iterable[str] | None = None) -> list[str]:
    """Give tied targets their own Parameter again (a copy of the current value).

    Args:
        names: target names or patterns; ``None`` unties every recorded tie on ``model``.
            A name tied by hand (no record) can be named too: it gets its own copy.

    Returns:
        The names untied.
    """
    recs = _records_mut(model)
    if names is None:
        chosen = list(recs)
    else:
        pats = [names] if isinstance(names, str) else list(names)
        all_names = _param_names(model)
        chosen = []
        for pat in pats:
            hits = [n for n, _ in match(pat, set(all_names) | set(recs))]
            if not hits:
                raise KeyError(f"untie: {pat!r} matches no parameter.{suggest(pat, all_names)}")
            chosen += [h for h in hits if h not in chosen]
    tied_by_hand = {n for g in ties(model) for n in g.names}
    sources = {r.source: r.target for r in recs.values()}
    for name in chosen:
        if name in sources and name not in recs and sources[name] not in chosen:
            raise TieError(f"{name!r} is the source of the tie {sources[name]!r} <- {name!r}; "
                           f"untie the target {sources[name]!r} instead")
    done = []
    for name in chosen:
        rec = recs.pop(name, None)
        module, attr = _owner(model, name)
        if rec is not None and rec.transform == "T":
            # remove_parametrizations writes into `original` in place: give it a private
            # copy first, or it would overwrite the source's tensor with its transpose.
            shared = module.parametrizations[attr].original
            module.parametrizations[attr].original = nn.Parameter(
                shared.detach().clone(), requires_grad=shared.requires_grad)
            parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
            module._parameters[attr].data = module._parameters[attr].data.contiguous()
        elif rec is not None or name in tied_by_hand:
            p = _get(model, name)
            _set(model, name, nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))
        else:
            continue
        done.append(name)
    return done


# --------------------------------------------------------------------------- cross-layer orders


def layer_sharing_order(n_layers: int, n_unique: int, order: str = "cycle") -> list[int]:
    """Which unique layer each of ``n_layers`` layers uses (Takase & Kiyono 2021).

    - ``"sequence"``: consecutive layers share: 0,0,0,0,1,1,1,1,2,2,2,2 (12 over 3)
    - ``"cycle"``: 0,1,2,0,1,2,...
    - ``"cycle_rev"``: cycle, but the last ``n_unique`` layers in reverse: 0,1,2,...,2,1,0
    - ``"all"``: every layer uses layer 0 (ALBERT)

    >>> layer_sharing_order(6, 3, "cycle_rev")
    [0, 1, 2, 2, 1, 0]
    """
    if not (isinstance(n_layers, int) and isinstance(n_unique, int)) or n_unique < 1 or \
            n_layers < n_unique:
        raise ValueError(f"need integers 1 <= n_unique <= n_layers, got n_layers={n_layers}, "
                         f"n_unique={n_unique}")
    if order == "all":
        return [0] * n_layers
    if order == "sequence":
        if n_layers % n_unique:
            raise ValueError(f"'sequence' needs n_layers divisible by n_unique, got "
                             f"{n_layers} and {n_unique}")
        per = n_layers // n_unique
        return [i // per for i in range(n_layers)]
    if order == "cycle":
        return [i % n_unique for i in range(n_layers)]
    if order == "cycle_rev":
        head = n_layers - n_unique
        return [i % n_unique for i in range(head)] + list(range(n_unique - 1, -1, -1))
    raise ValueError(f"order must be 'sequence', 'cycle', 'cycle_rev' or 'all'; got {order!r}")


def tie_layers(model: nn.Module, layers: str, n_unique: int,
               order: str = "cycle") -> list[TieRecord]:
    """Cross-layer sharing: tie the ``len(model.<layers>)`` layers so ``n_unique`` remain.

    >>> import torch.nn as nn, tying
    >>> enc = nn.Module(); enc.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(6))
    >>> _ = tying.tie_layers(enc, "blocks", n_unique=3, order="cycle_rev")
    >>> enc.blocks[5].weight is enc.blocks[0].weight, tying.footprint(enc).unique_params
    (True, 60)
    """
    container = _module(model, layers)
    n = len(container)
    idx = layer_sharing_order(n, n_unique, order)
    first = {}
    for i, u in enumerate(idx):
        first.setdefault(u, i)
    mapping = {f"{layers}.{i}": f"{layers}.{first[u]}" for i, u in enumerate(idx)
               if first[u] != i}
    return tie(model, mapping) if mapping else []
