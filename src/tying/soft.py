"""Soft tying: a norm penalty Ω that pulls paired parameters together instead of making them one.

Hard sharing (`tying.tie`) says "these parameters are one set". Soft tying says "these should be
close": Ω(w⁽ᴬ⁾, w⁽ᴮ⁾) = ‖w⁽ᴬ⁾ − w⁽ᴮ⁾‖²₂ (Goodfellow et al. §7.9) between two or more models, or
between a model and a frozen anchor (L2-SP, Li et al. 2018; with Fisher weights, EWC).

>>> import torch, tying
>>> a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
>>> with torch.no_grad():
...     _ = a.weight.fill_(0.0); _ = b.weight.fill_(1.0)
>>> penalty = tying.SoftTie.between(a, b, include="weight", strength=0.5)
>>> round(penalty().item(), 4)      # 0.5 * ‖w_a - w_b‖² = 0.5 * 6 elements * 1²
3.0
>>> {k: round(v, 3) for k, v in penalty.distances().items()}
{'weight': 6.0}

How it is computed: the paired tensors are grouped by (device, dtype). A group of small tensors
is flattened into one vector per model (a C++ loop) and reduced with segment sums; a group of
large tensors goes through ``torch._foreach_*`` kernels (no extra copy). The gradient is written
in closed form by a custom ``autograd.Function``: no Python loop per parameter pair, no autograd
graph per pair. Two ways to use it:

- ``loss = task_loss + penalty()``: differentiable, works everywhere autograd does;
- ``task_loss.backward(); penalty.backward()``: the fastest, adds the closed-form gradient to
  every ``.grad`` with one fused ``_foreach_add_`` per model and skips autograd's per-parameter
  accumulation (see `benchmarks/bench_soft_tie.py`).

`SoftTie` holds the `nn.Parameter` objects (like an optimizer): build it after moving the models
to their device and dtype. A distance that becomes NaN or inf raises `FloatingPointError` naming
the pair (the check costs one ``isfinite`` of the total; the culprit is searched only then).

Norms φ(d) of a difference d (summed over a group's elements unless said otherwise):

=========  ======================================  ============================================
``l2sq``   Σ d²  (the seed's; default)              gradient 2d
``l2``     √(Σ d²)                                  d/‖d‖ (0 at d = 0)
``l1``     Σ |d|                                    sign(d)
``huber``  Σ ½d² if |d| ≤ δ else δ(|d| − ½δ)        clamp(d, −δ, δ)
``group``  Σ over output units r of ‖d_r‖₂          per row (dim 0) of the tensor; group lasso
``fisher`` Σ F ⊙ d²   (EWC; F from `fisher_diagonal`)  2 F d
=========  ======================================  ============================================

Reduction: ``"sum"`` (default) gives Ω = s(t) · Σ_g λ_g φ_g, the seed's formula; ``"mean"``
divides each group's φ_g by its number of elements, so that a strength does not grow with the
size of the layer. s(t) is the schedule's factor at step t (`tying.schedules`).
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .schedules import Schedule, as_schedule

__all__ = ["NORMS", "TOPOLOGIES", "SoftTie", "fisher_diagonal"]

NORMS = ("l2sq", "l2", "l1", "huber", "group", "fisher")
_FLAT_MEAN_NUMEL = 8192   # buckets whose tensors average fewer elements take the flat path
TOPOLOGIES = ("pair", "chain", "star", "all_pairs")
_REDUCTIONS = ("sum", "mean")


def _unwrap(model: nn.Module) -> nn.Module:
    """DDP / torch.compile wrappers -> the module whose parameter names the user knows."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _patterns(arg: str | Sequence[str] | None, what: str) -> list[str]:
    if arg is None:
        return []
    if isinstance(arg, str):
        return [arg]
    if not all(isinstance(p, str) for p in arg):
        raise TypeError(f"{what} must be a glob string or a list of them, got {arg!r}")
    return list(arg)


def _matches(pattern: str, name: str) -> bool:
    # "features" also matches "features.0.weight": a module name selects its parameters.
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def _no_match_error(what: str, pattern: str, names: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(pattern, list(names), n=3, cutoff=0.4)
    hint = f" Close names: {', '.join(close)}." if close else ""
    shown = ", ".join(list(names)[:8]) + (", ..." if len(names) > 8 else "")
    return ValueError(f"{what} pattern {pattern!r} matches no parameter.{hint} "
                      f"Parameters: {shown}")


def _select(names: Sequence[str], include, exclude) -> list[str]:
    inc, exc = _patterns(include, "include"), _patterns(exclude, "exclude")
    for p in inc:
        if not any(_matches(p, n) for n in names):
            raise _no_match_error("include", p, names)
    chosen = [n for n in names if not inc or any(_matches(p, n) for p in inc)]
    for p in exc:
        if not any(_matches(p, n) for n in chosen):
            raise _no_match_error("exclude", p, chosen)
    chosen = [n for n in chosen if not any(_matches(p, n) for p in exc)]
    if not chosen:
        raise ValueError(f"include={include!r} and exclude={exclude!r} leave no parameter to tie")
    return chosen


def _check_strength(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"strength{where} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"strength{where} must be finite and >= 0, got {value}")
    return value


@dataclass(frozen=True)
class _Group:
    name: str                       # the group's name (model 0's parameter name)
    members: tuple[str, ...]        # "label 'name'" per member, for error messages
    shape: tuple[int, ...]
    numel: int
    strength: float


class _Bucket:
    """The groups whose tensors share one (device, dtype): one fused computation."""

    def __init__(self, index: list[int], members: list[list[torch.Tensor]], trainable: list[bool],
                 weights: torch.Tensor, sqrt_fisher: list[torch.Tensor] | None):
        self.index = index                    # positions of these groups in SoftTie.groups
        self.members = members                # [member k][group in bucket] -> tensor
        self.trainable = trainable            # member k is a model (True) or an anchor (False)
        self.weights = weights                # (G_b,) strength · (1/numel if mean)
        self.sqrt_fisher = sqrt_fisher
        self.rows: tuple[torch.Tensor, torch.Tensor, list[int], int] | None = None
        ref = members[0]
        device = ref[0].device
        self.sizes = [t.numel() for t in ref]
        self.shapes = [t.shape for t in ref]
        self.numel = sum(self.sizes)
        # many small tensors: one flat vector per member (a cat of views) and segment sums beat
        # a per-tensor foreach loop; large tensors: foreach avoids the extra copy.
        self.flat = self.numel < _FLAT_MEAN_NUMEL * len(ref)
        self.lengths = torch.tensor(self.sizes, dtype=torch.long, device=device)
        n_rows = [t.shape[0] if t.dim() >= 1 and t.numel() else 1 for t in ref]
        self.rows_per_group = torch.tensor(n_rows, dtype=torch.long, device=device)
        self.row_len = torch.tensor([t.numel() // r for t, r in zip(ref, n_rows) for _ in range(r)],
                                    dtype=torch.long, device=device)
        self.fisher_flat = (torch.cat([f.reshape(-1) for f in sqrt_fisher]).square()
                            if sqrt_fisher is not None and self.flat else None)
        self.flat_const = [None if trainable[j] or not self.flat else _flatten(members[j])
                           for j in range(len(members))]
        # the autograd inputs, in the order _FusedDistance.forward unpacks them
        self.inputs = tuple(t for j, ms in enumerate(members) if trainable[j] for t in ms)

    def group_rows(self):
        """For the ``group`` norm: row id per element, group id per row (built once)."""
        if self.rows is None:
            ref = self.members[0]
            device = ref[0].device
            n_rows = [t.shape[0] if t.dim() >= 1 else 1 for t in ref]
            row_len = [t.numel() // max(r, 1) for t, r in zip(ref, n_rows)]
            row_id = torch.repeat_interleave(
                torch.arange(sum(n_rows), device=device),
                torch.tensor([ln for ln, r in zip(row_len, n_rows) for _ in range(r)],
                             device=device, dtype=torch.long))
            row_group = torch.repeat_interleave(torch.arange(len(ref), device=device),
                                                torch.tensor(n_rows, device=device))
            self.rows = (row_id, row_group, [t.numel() for t in ref], sum(n_rows))
        return self.rows


# ---------------------------------------------------------------- norms: values and gradients

def _norm_values(norm: str, d: list[torch.Tensor], bucket: _Bucket, delta: float):
    """Per-group φ(d) as a (G_b,) tensor, and what the gradient needs."""
    if norm in ("l2sq", "l2"):
        n = torch.stack(torch._foreach_norm(d))
        return (n * n if norm == "l2sq" else n), n
    if norm == "l1":
        return torch.stack(torch._foreach_norm(d, 1)), None
    if norm == "huber":
        c = torch._foreach_clamp_max(torch._foreach_clamp_min(d, -delta), delta)
        n2 = torch.stack(torch._foreach_norm(c))
        v = 0.5 * n2 * n2 + delta * (torch.stack(torch._foreach_norm(d, 1))
                                     - torch.stack(torch._foreach_norm(c, 1)))
        return v, c
    if norm == "fisher":
        s = torch._foreach_mul(d, bucket.sqrt_fisher)
        n = torch.stack(torch._foreach_norm(s))
        return n * n, s
    # group: one norm per output unit (row along dim 0), summed within each group
    row_id, row_group, _, n_rows = bucket.group_rows()
    flat = torch.cat([t.reshape(-1) for t in d])
    row_sq = torch.zeros(n_rows, dtype=flat.dtype, device=flat.device)
    row_sq.index_add_(0, row_id, flat * flat)
    row_norm = row_sq.sqrt()
    v = torch.zeros(len(d), dtype=flat.dtype, device=flat.device)
    v.index_add_(0, row_group, row_norm)
    return v, (flat, row_norm)


def _norm_grads(norm: str, d: list[torch.Tensor], saved, coeff: torch.Tensor,
                bucket: _Bucket, inplace: bool = False) -> list[torch.Tensor]:
    """∂(Σ_g coeff_g φ_g)/∂d for every tensor of the bucket (``inplace``: d may be reused)."""
    if norm == "l2sq":
        if inplace:
            torch._foreach_mul_(d, (2.0 * coeff).tolist())
            return d
        return torch._foreach_mul(d, (2.0 * coeff).tolist())
    if norm == "l2":
        scale = torch.where(saved > 0, coeff / saved.clamp_min(torch.finfo(saved.dtype).tiny),
                            torch.zeros_like(saved))
        return torch._foreach_mul(d, scale.tolist())
    if norm == "l1":
        return torch._foreach_mul(torch._foreach_sign(d), coeff.tolist())
    if norm == "huber":
        return torch._foreach_mul(saved, coeff.tolist())
    if norm == "fisher":
        g = torch._foreach_mul(saved, bucket.sqrt_fisher)
        torch._foreach_mul_(g, (2.0 * coeff).tolist())
        return g
    flat, row_norm = saved
    row_id, row_group, sizes, _ = bucket.group_rows()
    per_row = torch.where(row_norm > 0, coeff[row_group] / row_norm.clamp_min(1e-38),
                          torch.zeros_like(row_norm))
    g = flat * per_row[row_id]
    return [piece.view(t.shape) for piece, t in zip(torch.split(g, sizes), d)]


def _flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat copy of many tensors (a C++ loop: no per-tensor Python view)."""
    return torch._C._nn.flatten_dense_tensors(list(tensors))


def _unflatten(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Views of ``flat`` shaped like ``like`` (a C++ loop)."""
    return torch._C._nn.unflatten_dense_tensors(flat, list(like))


def _flat_values(norm: str, d: torch.Tensor, bucket: _Bucket, delta: float):
    """As `_norm_values`, on one flat vector: elementwise ops and segment sums."""
    def segsum(x, lengths=bucket.lengths):
        return torch.segment_reduce(x, "sum", lengths=lengths)

    if norm == "l2sq":
        return segsum(d * d), None
    if norm == "l2":
        n = segsum(d * d).sqrt()
        return n, n
    if norm == "l1":
        return segsum(d.abs()), None
    if norm == "huber":
        a = d.abs()
        h = torch.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))
        return segsum(h), d.clamp(-delta, delta)
    if norm == "fisher":
        return segsum(bucket.fisher_flat * d * d), None
    row_norm = segsum(d * d, bucket.row_len).sqrt()
    return segsum(row_norm, bucket.rows_per_group), row_norm


def _flat_grad(norm: str, d: torch.Tensor, saved, coeff: torch.Tensor,
               bucket: _Bucket, inplace: bool = False) -> torch.Tensor:
    def spread(x, lengths=bucket.lengths, total=bucket.numel):
        return torch.repeat_interleave(x, lengths, output_size=total)

    if norm == "l2sq":
        return d.mul_(spread(2.0 * coeff)) if inplace else spread(2.0 * coeff) * d
    if norm == "l2":
        scale = torch.where(saved > 0, coeff / saved.clamp_min(torch.finfo(saved.dtype).tiny),
                            torch.zeros_like(saved))
        return spread(scale) * d
    if norm == "l1":
        return spread(coeff) * torch.sign(d)
    if norm == "huber":
        return spread(coeff) * saved
    if norm == "fisher":
        return spread(2.0 * coeff) * bucket.fisher_flat * d
    per_row = torch.where(saved > 0, spread(coeff, bucket.rows_per_group, len(saved))
                          / saved.clamp_min(torch.finfo(saved.dtype).tiny),
                          torch.zeros_like(saved))
    return spread(per_row, bucket.row_len) * d


def _pairs(tie: SoftTie, k: int) -> list[tuple[int, int | None]]:
    return [(j, None) for j in range(k)] if tie.topology == "star" else tie.pairs


def _combine(tie: SoftTie, pairs, g_list, k: int, add, sub, neg, mean_of):
    """Per-member gradients from per-pair ones: pairs give ±g, star gives g_j − mean(g)."""
    if tie.topology == "star":
        mean = mean_of(g_list)
        return [sub(g, mean) for g in g_list]
    grads = [None] * k
    for (i, j), g in zip(pairs, g_list):
        grads[i] = g if grads[i] is None else add(grads[i], g)
        grads[j] = neg(g) if grads[j] is None else sub(grads[j], g)
    return grads


def _bucket_distances(tie: SoftTie, bucket: _Bucket, members: list[list[torch.Tensor]]):
    """Per-group φ of one bucket (G_b,), and what the gradient needs (no autograd graph)."""
    k = len(members)
    pairs = _pairs(tie, k)
    diffs, saved, v = [], [], None
    if bucket.flat:
        flats = [_flatten(m) if c is None else c for m, c in zip(members, bucket.flat_const)]
        mean = sum(flats) / k if tie.topology == "star" else None
        for i, j in pairs:
            d = flats[i] - (mean if j is None else flats[j])
            vi, si = _flat_values(tie.norm, d, bucket, tie.huber_delta)
            v = vi if v is None else v + vi
            diffs.append(d)
            saved.append(si)
        return v, (pairs, diffs, saved)
    if tie.topology == "star":
        mean = torch._foreach_add(members[0], members[1])
        for j in range(2, k):
            torch._foreach_add_(mean, members[j])
        torch._foreach_div_(mean, float(k))
    for i, j in pairs:
        d = torch._foreach_sub(members[i], mean if j is None else members[j])
        vi, si = _norm_values(tie.norm, d, bucket, tie.huber_delta)
        v = vi if v is None else v + vi
        diffs.append(d)
        saved.append(si)
    return v, (pairs, diffs, saved)


def _bucket_grads(tie: SoftTie, bucket: _Bucket, state, coeff: torch.Tensor,
                  inplace: bool = False):
    """∂(Σ_g coeff_g φ_g)/∂w per member: a flat vector (flat path) or a list of tensors.

    Pairs give ±g; star (Ω = Σ_i φ(w_i − w̄)) gives ∂Ω/∂w_j = g_j − (1/k) Σ_i g_i.
    ``inplace``: the saved differences are not needed again and may hold the gradient.
    """
    pairs, diffs, saved = state
    k = len(bucket.members)
    if bucket.flat:
        g_list = [_flat_grad(tie.norm, d, s, coeff, bucket, inplace)
                  for d, s in zip(diffs, saved)]
        return _combine(tie, pairs, g_list, k, torch.add, torch.sub, torch.neg,
                        lambda gs: sum(gs) / k)
    g_list = [_norm_grads(tie.norm, d, s, coeff, bucket, inplace) for d, s in zip(diffs, saved)]

    def mean_of(gs):
        m = torch._foreach_add(gs[0], gs[1])
        for g in gs[2:]:
            torch._foreach_add_(m, g)
        torch._foreach_div_(m, float(k))
        return m

    return _combine(tie, pairs, g_list, k, torch._foreach_add, torch._foreach_sub,
                    torch._foreach_neg, mean_of)


def _members(bucket: _Bucket, tensors) -> list[list[torch.Tensor]]:
    """Trainable members from ``tensors`` (so autograd sees them), anchors from the bucket."""
    n_b, pos, out = len(bucket.index), 0, []
    for j, trainable in enumerate(bucket.trainable):
        if trainable:
            out.append(list(tensors[pos * n_b:(pos + 1) * n_b]))
            pos += 1
        else:
            out.append(bucket.members[j])
    return out


class _FusedDistance(torch.autograd.Function):
    """Per-group distances of one bucket, with a closed-form backward (no per-pair graph)."""

    @staticmethod
    def forward(ctx, tie: SoftTie, bucket: _Bucket, *tensors):
        v, state = _bucket_distances(tie, bucket, _members(bucket, tensors))
        ctx.tie, ctx.bucket, ctx.state = tie, bucket, state
        return v

    @staticmethod
    def backward(ctx, grad_v):
        bucket = ctx.bucket
        grads = _bucket_grads(ctx.tie, bucket, ctx.state, grad_v)
        out = []
        for j, trainable in enumerate(bucket.trainable):
            if trainable:
                out.extend(_unflatten(grads[j], bucket.members[0]) if bucket.flat else grads[j])
        return (None, None, *out)


class SoftTie:
    """A differentiable penalty Ω pulling groups of paired parameters together.

    Build it with `SoftTie.between` (parameters of two or more models) or `SoftTie.to_anchor`
    (a model and a frozen state: L2-SP, EWC). Calling it returns a scalar to add to the loss.

    Attributes:
        groups: the tied groups (name, members, shape, strength), in order.
        norm, topology, reduction, huber_delta: as given to the constructor.
        schedule: ``step -> factor``; `step()` advances the internal step counter.
        steps: the internal step counter.

    Example:
        >>> import torch, tying
        >>> a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
        >>> penalty = tying.SoftTie.between(a, b, strength={"weight": 1e-2, "bias": 0.0})
        >>> [g.name for g in penalty.groups]
        ['weight', 'bias']
        >>> loss = penalty()
        >>> loss.backward()
        >>> torch.allclose(a.weight.grad, -b.weight.grad)
        True
    """

    def __init__(self, members: list[list[torch.Tensor]], group_names: list[str],
                 labels: list[str], member_names: list[list[str]], trainable: list[bool], *,
                 norm: str = "l2sq", strength: float | Mapping[str, float] = 1.0,
                 topology: str = "pair", reduction: str = "sum",
                 schedule: Schedule | str | None = None, huber_delta: float = 1.0,
                 fisher: Mapping[str, torch.Tensor] | None = None, check_finite: bool = True):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        k = len(members)
        if k < 2:
            raise ValueError(f"a soft tie needs at least 2 members, got {k}")
        if topology == "pair" and k != 2:
            raise ValueError(f"topology='pair' ties exactly 2 models, got {k}; choose "
                             f"topology='chain', 'star' or 'all_pairs'")
        if topology == "star" and not all(trainable):
            raise ValueError("topology='star' ties models to their mean; an anchor needs 'pair'")
        delta = _check_strength(huber_delta, " (huber_delta)")
        if norm == "huber" and delta == 0:
            raise ValueError("huber_delta must be > 0 for norm='huber'")
        self.norm, self.topology, self.reduction = norm, topology, reduction
        self.huber_delta = delta
        self.schedule = as_schedule(schedule)
        self.steps = 0
        self.check_finite = check_finite
        if topology == "chain":
            self.pairs = [(i, i + 1) for i in range(k - 1)]
        elif topology in ("all_pairs", "pair"):
            self.pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        else:
            self.pairs = []
        strengths = self._strengths(strength, group_names)
        if norm == "fisher" and fisher is None:
            raise ValueError("norm='fisher' needs fisher= (name -> diagonal Fisher tensor); "
                             "estimate it with tying.soft.fisher_diagonal(model, data, loss_fn)")
        if fisher is not None and norm != "fisher":
            raise ValueError(f"fisher= is only used by norm='fisher', got norm={norm!r}")

        self.groups: list[_Group] = []
        for g, name in enumerate(group_names):
            ref = members[0][g]
            for j in range(1, k):
                t = members[j][g]
                if t.shape != ref.shape:
                    raise ValueError(
                        f"cannot tie {labels[0]} {member_names[0][g]!r} {tuple(ref.shape)} to "
                        f"{labels[j]} {member_names[j][g]!r} {tuple(t.shape)}: shapes differ; "
                        f"pair parameters of equal shape (mapping=, include=, exclude=)")
                if t.device != ref.device or t.dtype != ref.dtype:
                    raise ValueError(
                        f"cannot tie {labels[0]} {member_names[0][g]!r} ({ref.dtype}, "
                        f"{ref.device}) to {labels[j]} {member_names[j][g]!r} ({t.dtype}, "
                        f"{t.device}): move it first, e.g. .to(device={ref.device}, "
                        f"dtype={ref.dtype})")
            desc = tuple(f"{labels[j]} {member_names[j][g]!r}" for j in range(k))
            self.groups.append(_Group(name, desc, tuple(ref.shape), ref.numel(), strengths[g]))

        sqrt_f: list[torch.Tensor | None] = [None] * len(group_names)
        if fisher is not None:
            missing = [n for n in group_names if n not in fisher]
            if missing:
                raise ValueError(f"fisher= lacks the tied parameters {missing}")
            for g, name in enumerate(group_names):
                f = fisher[name]
                ref = members[0][g]
                if not isinstance(f, torch.Tensor) or f.shape != ref.shape:
                    raise ValueError(f"fisher[{name!r}] must be a tensor of shape "
                                     f"{tuple(ref.shape)}, got {getattr(f, 'shape', f)!r}")
                if bool((f < 0).any()) or not bool(torch.isfinite(f).all()):
                    raise ValueError(f"fisher[{name!r}] must be finite and >= 0")
                sqrt_f[g] = f.detach().to(device=ref.device, dtype=ref.dtype).sqrt()

        # buckets by (device, dtype)
        keys: dict[tuple, list[int]] = {}
        for g in range(len(group_names)):
            t = members[0][g]
            keys.setdefault((t.device, t.dtype), []).append(g)
        self._buckets = []
        for (device, dtype), index in keys.items():
            w = torch.tensor([self.groups[g].strength / (self.groups[g].numel
                                                         if reduction == "mean" else 1)
                              for g in index], dtype=dtype, device=device)
            self._buckets.append(_Bucket(
                index, [[members[j][g] for g in index] for j in range(k)], list(trainable), w,
                [sqrt_f[g] for g in index] if fisher is not None else None))
        self._labels = labels

    # ------------------------------------------------------------------ constructors

    @classmethod
    def between(cls, *models: nn.Module, include: str | Sequence[str] | None = None,
                exclude: str | Sequence[str] | None = None,
                mapping: Mapping[str, str] | None = None, norm: str = "l2sq",
                strength: float | Mapping[str, float] = 1.0, topology: str = "pair",
                reduction: str = "sum", schedule: Schedule | str | None = None,
                huber_delta: float = 1.0, fisher: Mapping[str, torch.Tensor] | None = None,
                check_finite: bool = True) -> SoftTie:
        """Tie the parameters of two or more models (equal names, patterns, or a mapping).

        Args:
            *models: two or more modules (DDP / compiled wrappers are looked through).
            include: glob(s) over model 0's parameter names (a module name selects its
                parameters, e.g. ``"features"``); each must match something.
            exclude: glob(s) removed from the included names; each must match something.
            mapping: ``{name in model 0: name in model 1}`` for two models whose names differ;
                a key may be a module prefix (``{"features": "encoder"}`` pairs
                ``features.0.weight`` with ``encoder.0.weight``). Without it, names must be
                equal: models whose parameter names differ need include= or mapping=.
            norm: one of `NORMS` (see the module docstring).
            strength: λ for every group, or ``{glob: λ}`` (first matching glob wins; every
                group must be matched). Finite and >= 0.
            topology: ``pair`` (2 models), ``chain`` (0-1, 1-2, ...), ``star`` (each model to
                the group mean), ``all_pairs``.
            reduction: ``sum`` (Σ over elements, the seed's Ω) or ``mean`` (per-group mean).
            schedule: ``step -> factor`` (`tying.schedules`), default constant 1.
            huber_delta: δ of the Huber norm.
            fisher: per-parameter weights (model 0's names) for ``norm="fisher"``.
            check_finite: raise naming the pair when a distance is NaN or inf.

        Example:
            >>> import torch, tying
            >>> nets = [torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
            ...         for _ in range(3)]
            >>> p = tying.SoftTie.between(*nets, include="1.*", topology="star", norm="l2")
            >>> [g.name for g in p.groups]
            ['1.weight', '1.bias']
        """
        if len(models) < 2:
            raise ValueError(f"SoftTie.between needs at least 2 models, got {len(models)}")
        mods = [_unwrap(m) for m in models]
        named = [dict(m.named_parameters()) for m in mods]
        names0 = list(named[0])
        if mapping is not None:
            if len(mods) != 2:
                raise ValueError("mapping= pairs exactly 2 models")
            pairs = _expand_mapping(mapping, named[0], named[1])
            chosen = _select(list(pairs), include, exclude)
            member_names = [chosen, [pairs[n] for n in chosen]]
        else:
            if include is None:
                for j, nm in enumerate(named[1:], start=1):
                    if set(nm) != set(names0):
                        only0 = sorted(set(names0) - set(nm))[:5]
                        only1 = sorted(set(nm) - set(names0))[:5]
                        raise ValueError(
                            f"model 0 and model {j} have different parameter names (only in "
                            f"model 0: {only0}; only in model {j}: {only1}); choose the tied "
                            f"ones with include= or pair them with mapping=")
            chosen = _select(names0, include, exclude)
            for j, nm in enumerate(named[1:], start=1):
                for n in chosen:
                    if n not in nm:
                        close = difflib.get_close_matches(n, list(nm), n=3, cutoff=0.4)
                        raise ValueError(f"model {j} has no parameter {n!r} (included from "
                                         f"model 0); close names: {close}; use mapping=")
            member_names = [chosen] * len(mods)
        members = [[named[j][n] for n in member_names[j]] for j in range(len(mods))]
        labels = [f"model {j}" for j in range(len(mods))]
        return cls(members, list(chosen), labels, member_names, [True] * len(mods), norm=norm,
                   strength=strength, topology=topology, reduction=reduction, schedule=schedule,
                   huber_delta=huber_delta, fisher=fisher, check_finite=check_finite)

    @classmethod
    def to_anchor(cls, model: nn.Module,
                  state: Mapping[str, torch.Tensor] | nn.Module | None = None, *,
                  include: str | Sequence[str] | None = None,
                  exclude: str | Sequence[str] | None = None, norm: str | None = None,
                  strength: float | Mapping[str, float] = 1.0, reduction: str = "sum",
                  schedule: Schedule | str | None = None, huber_delta: float = 1.0,
                  fisher: Mapping[str, torch.Tensor] | None = None,
                  check_finite: bool = True) -> SoftTie:
        """Tie a model to a frozen anchor: L2-SP (α/2‖w − w⁰‖², pass strength=α/2), or EWC.

        Args:
            model: the module being trained.
            state: the anchor: a state dict, a module, or None for a snapshot of ``model``
                now. Always copied: ``model.state_dict()`` shares storage with the parameters,
                and an anchor that moves with the model would be no anchor at all. Its
                tensors must already be on the model's device and dtype (refused otherwise).
            include, exclude, strength, reduction, schedule, huber_delta, check_finite: as in
                `between`.
            norm: default ``"fisher"`` when ``fisher`` is given, else ``"l2sq"``.
            fisher: ``{name: diagonal Fisher}`` (e.g. from `fisher_diagonal`): EWC.

        Example:
            >>> import torch, tying
            >>> net = torch.nn.Linear(3, 1)
            >>> l2sp = tying.SoftTie.to_anchor(net, strength=0.5)   # anchor = net as it is now
            >>> l2sp().detach()
            tensor(0.)
        """
        mod = _unwrap(model)
        named = dict(mod.named_parameters())
        if state is None:
            anchor = {n: p.detach().clone() for n, p in named.items()}
        elif isinstance(state, nn.Module):
            anchor = {n: p.detach().clone() for n, p in _unwrap(state).state_dict().items()}
        elif isinstance(state, Mapping):
            anchor = dict(state)
        else:
            raise TypeError(f"state must be a state dict, a module or None, got "
                            f"{type(state).__name__}")
        chosen = _select(list(named), include, exclude)
        anchors = []
        for n in chosen:
            if n not in anchor:
                close = difflib.get_close_matches(n, list(anchor), n=3, cutoff=0.4)
                raise ValueError(f"the anchor state has no entry {n!r}; close keys: {close}")
            a, p = anchor[n], named[n]
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"anchor[{n!r}] must be a tensor, got {type(a).__name__}")
            if a.shape != p.shape:
                raise ValueError(f"cannot tie model {n!r} {tuple(p.shape)} to anchor {n!r} "
                                 f"{tuple(a.shape)}: shapes differ")
            if a.device != p.device or a.dtype != p.dtype:
                raise ValueError(f"anchor {n!r} is ({a.dtype}, {a.device}) but the model's "
                                 f"parameter is ({p.dtype}, {p.device}); move the anchor first: "
                                 f"{{k: v.to(device={str(p.device)!r}, dtype={p.dtype}) ...}}")
            anchors.append(a.detach().clone() if state is not None else a)
        if norm is None:
            norm = "fisher" if fisher is not None else "l2sq"
        return cls([[named[n] for n in chosen], anchors], chosen, ["model", "anchor"],
                   [chosen, chosen], [True, False], norm=norm, strength=strength,
                   topology="pair", reduction=reduction, schedule=schedule,
                   huber_delta=huber_delta, fisher=fisher, check_finite=check_finite)

    # ------------------------------------------------------------------ evaluation

    def _strengths(self, strength, names: list[str]) -> list[float]:
        if isinstance(strength, Mapping):
            spec = {p: _check_strength(v, f"[{p!r}]") for p, v in strength.items()}
            for p in spec:
                if not any(_matches(p, n) for n in names):
                    raise _no_match_error("strength", p, names)
            out = []
            for n in names:
                hit = next((v for p, v in spec.items() if _matches(p, n)), None)
                if hit is None:
                    raise ValueError(f"strength= gives no value for the tied parameter {n!r}; "
                                     f"add it or a catch-all '*': value")
                out.append(hit)
            return out
        return [_check_strength(strength, "")] * len(names)

    def _distances(self) -> list[torch.Tensor]:
        out = []
        for b in self._buckets:
            out.append(_FusedDistance.apply(self, b, *b.inputs))
        return out

    def _raise_non_finite(self, values: list[torch.Tensor]) -> None:
        for b, v in zip(self._buckets, values):
            bad = torch.nonzero(~torch.isfinite(v.detach())).flatten().tolist()
            for pos in bad:
                g = self.groups[b.index[pos]]
                culprits = [m for m, ms in zip(g.members, b.members)
                            if not bool(torch.isfinite(ms[pos]).all())]
                why = (f"non-finite values in {', '.join(culprits)}" if culprits
                       else "the distance overflowed")
                raise FloatingPointError(
                    f"soft tie {g.name!r} between {' and '.join(g.members)} has distance "
                    f"{v[pos].item()} ({why}); lower the learning rate or strength, or check "
                    f"the data")

    def __call__(self, step: int | None = None) -> torch.Tensor:
        """Ω at ``step`` (default: the internal counter advanced by `step()`), a 0-d tensor."""
        values = self._distances()
        factor = float(self.schedule(self.steps if step is None else step))
        total = None
        for b, v in zip(self._buckets, values):
            part = (v * b.weights).sum()
            total = part if total is None else total + part.to(total)
        if self.check_finite and not bool(torch.isfinite(total.detach())):
            self._raise_non_finite(values)
        return total * factor if factor != 1.0 else total

    def step(self) -> None:
        """Advance the schedule by one step (call once per optimizer step)."""
        self.steps += 1

    @torch.no_grad()
    def backward(self, step: int | None = None) -> torch.Tensor:
        """Add ∂Ω/∂w straight into every tied parameter's ``.grad``; return Ω (detached).

        The fast path, without autograd: the closed-form gradient is added with one fused
        ``torch._foreach_add_`` per member instead of one autograd accumulation per tensor.
        Use it instead of adding ``penalty()`` to the loss, after ``loss.backward()``
        (under DDP: after the all-reduce, i.e. after ``loss.backward()`` returns; every rank
        adds the same gradient, so replicas stay equal). Same value and gradient as
        ``penalty().backward()``.

        Example:
            >>> import torch, tying
            >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
            >>> p = tying.SoftTie.between(a, b)
            >>> value = p.backward()
            >>> torch.allclose(a.weight.grad, 2 * (a.weight - b.weight))
            True
        """
        factor = float(self.schedule(self.steps if step is None else step))
        total = None
        for b in self._buckets:
            v, state = _bucket_distances(self, b, b.members)
            part = (v * b.weights).sum()
            total = part if total is None else total + part.to(total)
            if self.check_finite and not bool(torch.isfinite(part)):
                self._raise_non_finite([v if bb is b else torch.zeros(len(bb.index))
                                        for bb in self._buckets])
            grads = _bucket_grads(self, b, state, b.weights * factor, inplace=True)
            for j, trainable in enumerate(b.trainable):
                if not trainable:
                    continue
                params = [t for t in b.members[j] if t.requires_grad]
                if len(params) != len(b.members[j]):   # frozen members: keep the others
                    keep = [t.requires_grad for t in b.members[j]]
                    g = _unflatten(grads[j], b.members[0]) if b.flat else grads[j]
                    pairs = [(t, gi) for t, gi, k in zip(b.members[j], g, keep) if k]
                    params, g = [t for t, _ in pairs], [gi for _, gi in pairs]
                else:
                    g = _unflatten(grads[j], b.members[0]) if b.flat else grads[j]
                existing = [t.grad for t in params]
                if all(e is not None for e in existing):
                    torch._foreach_add_(existing, g)
                else:
                    for t, e, gi in zip(params, existing, g):
                        if e is None:
                            t.grad = gi
                        else:
                            e.add_(gi)
        return total * factor

    @torch.no_grad()
    def distances(self) -> dict[str, float]:
        """Each group's distance φ_g (no strength, no schedule, no mean reduction), as floats.

        For logging, progress bars and plots; computed now, without building a graph.
        """
        out: dict[str, float] = {}
        for b, v in zip(self._buckets, self._distances()):
            for pos, val in zip(b.index, v.tolist()):
                out[self.groups[pos].name] = val
        return {g.name: out[g.name] for g in self.groups}

    @property
    def strengths(self) -> dict[str, float]:
        """λ per group (before the schedule)."""
        return {g.name: g.strength for g in self.groups}

    def __repr__(self) -> str:
        n = sum(g.numel for g in self.groups)
        return (f"SoftTie({len(self.groups)} groups, {n} elements per member, norm={self.norm!r}, "
                f"topology={self.topology!r}, reduction={self.reduction!r})")


def _expand_mapping(mapping: Mapping[str, str], a: Mapping[str, torch.Tensor],
                    b: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """{name or module prefix in a: same in b} -> {param name in a: param name in b}."""
    out: dict[str, str] = {}
    for ka, kb in mapping.items():
        if not isinstance(ka, str) or not isinstance(kb, str):
            raise TypeError(f"mapping must map str to str, got {ka!r}: {kb!r}")
        if ka in a:
            if kb not in b:
                close = difflib.get_close_matches(kb, list(b), n=3, cutoff=0.4)
                raise ValueError(f"mapping {ka!r}: {kb!r}: model 1 has no parameter {kb!r}; "
                                 f"close names: {close}")
            out[ka] = kb
            continue
        sub = [n for n in a if n.startswith(ka + ".")]
        if not sub:
            raise _no_match_error("mapping", ka, list(a))
        for n in sub:
            m = kb + n[len(ka):]
            if m not in b:
                close = difflib.get_close_matches(m, list(b), n=3, cutoff=0.4)
                raise ValueError(f"mapping {ka!r}: {kb!r} pairs {n!r} with {m!r}, which model 1 "
                                 f"lacks; close names: {close}")
            out[n] = m
    return out


def fisher_diagonal(model: nn.Module, data, loss_fn: Callable[[torch.Tensor, torch.Tensor],
                                                              torch.Tensor], *,
                    sample_labels: bool = False, generator: torch.Generator | None = None,
                    include: str | Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The diagonal Fisher: the MEAN of per-sample squared gradients, E[(∂ℓ/∂w)²].

    Not the square of the mean gradient (which is ~0 at a minimum). Per-sample gradients come
    from ``torch.func.vmap(grad(...))`` in one batched pass per batch. The model is evaluated in
    eval mode (restored afterwards).

    Args:
        model: the network.
        data: a pair ``(x, y)`` of tensors, or an iterable of such batches (a DataLoader).
        loss_fn: ``loss_fn(output, target)`` for a batch of one, e.g. ``F.cross_entropy``.
        sample_labels: use labels drawn from the model's softmax (the "true" Fisher of a
            classifier) instead of the data's labels (the empirical Fisher).
        generator: randomness for ``sample_labels``.
        include: restrict to these parameter globs.

    Returns:
        ``{name: tensor of the parameter's shape}``, ready for ``SoftTie.to_anchor(fisher=...)``.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> net = torch.nn.Linear(3, 2)
        >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
        >>> fisher = fisher_diagonal(net, (x, y), F.cross_entropy)
        >>> sorted(fisher), fisher["weight"].shape
        (['bias', 'weight'], torch.Size([2, 3]))
    """
    from torch.func import functional_call, grad, vmap

    mod = _unwrap(model)
    names = _select([n for n, p in mod.named_parameters() if p.requires_grad], include, None)
    params = {n: p.detach() for n, p in mod.named_parameters() if n in names}
    frozen = {n: p.detach() for n, p in mod.named_parameters() if n not in params}
    buffers = dict(mod.named_buffers())

    def sample_loss(p, x, y):
        out = functional_call(mod, ({**p, **frozen}, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        batches: Iterable = [tuple(data)]
    else:
        batches = data
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    was_training = mod.training
    mod.eval()
    try:
        for x, y in batches:
            if sample_labels:
                with torch.no_grad():
                    probs = torch.softmax(mod(x), dim=-1)
                y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            g = per_sample(params, x, y)
            for n in acc:
                acc[n] += g[n].pow(2).sum(0)
            count += len(x)
    finally:
        mod.train(was_training)
    if count == 0:
        raise ValueError("fisher_diagonal got no data")
    return {n: a / count for n, a in acc.items()}
