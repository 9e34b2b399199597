"""tying.soft: values and gradients against naive autograd references, topologies, anchors,
schedules, the Fisher helper, and every kind of bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tying
import tying.soft
from tying.schedules import Constant, Cosine, LinearWarmup
from tying.soft import SoftTie, fisher_diagonal


@pytest.fixture(params=["flat", "foreach"])
def path(request, monkeypatch):
    """Both code paths: one flat vector per member (small tensors) and per-tensor foreach."""
    monkeypatch.setattr(tying.soft, "_FLAT_MEAN_NUMEL", 10**9 if request.param == "flat" else 0)
    return request.param


def net(seed: int, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5),
                         nn.ReLU(), nn.Linear(5, 2)).to(dtype)


def naive_phi(norm: str, d: torch.Tensor, delta: float = 1.0, f=None) -> torch.Tensor:
    if norm == "l2sq":
        return (d ** 2).sum()
    if norm == "l2":
        return d.pow(2).sum().sqrt()
    if norm == "l1":
        return d.abs().sum()
    if norm == "huber":
        return F.huber_loss(d, torch.zeros_like(d), delta=delta, reduction="sum")
    if norm == "group":
        return d.reshape(d.shape[0], -1).norm(dim=1).sum() if d.dim() else d.abs()
    if norm == "fisher":
        return (f * d ** 2).sum()
    raise AssertionError(norm)


def grads(models):
    return [p.grad.clone() for m in models for p in m.parameters()]


def zero(models):
    for m in models:
        for p in m.parameters():
            p.grad = None


@pytest.mark.parametrize("norm", ["l2sq", "l2", "l1", "huber", "group", "fisher"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_value_and_gradient_match_naive_autograd(norm, reduction, path):
    a, b = net(0), net(1)
    names = [n for n, _ in a.named_parameters()]
    fisher = {n: torch.rand_like(p) for n, p in a.named_parameters()} if norm == "fisher" else None
    strength = {"0.*": 0.3, "*": 2.0}
    tie = SoftTie.between(a, b, norm=norm, strength=strength, reduction=reduction,
                          huber_delta=0.05, fisher=fisher)
    assert all(bucket.flat == (path == "flat") for bucket in tie._buckets)
    value = tie()
    value.backward()
    got = grads([a, b])
    zero([a, b])
    ref = 0.0
    for n, pa, pb in zip(names, a.parameters(), b.parameters()):
        lam = 0.3 if n.startswith("0.") else 2.0
        phi = naive_phi(norm, pa - pb, 0.05, None if fisher is None else fisher[n])
        ref = ref + lam * phi / (pa.numel() if reduction == "mean" else 1)
    ref.backward()
    assert torch.allclose(value, ref, rtol=1e-10, atol=1e-12)
    for g, r in zip(got, grads([a, b])):
        assert torch.allclose(g, r, rtol=1e-8, atol=1e-12)
    # the direct path: same value, same gradient, added to the existing .grad
    direct = tie.backward()
    assert not direct.requires_grad and torch.allclose(direct, ref, rtol=1e-10, atol=1e-12)
    for g, r in zip(got, grads([a, b])):
        assert torch.allclose(2 * g, r, rtol=1e-8, atol=1e-12)
    # distances(): φ per group, without strength or reduction
    d = tie.distances()
    assert list(d) == names
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        want = naive_phi(norm, pa - pb, 0.05, None if fisher is None else fisher[n]).item()
        assert math.isclose(d[n], want, rel_tol=1e-9)


@pytest.mark.parametrize("topology", ["chain", "star", "all_pairs"])
@pytest.mark.parametrize("norm", ["l2sq", "l1", "group"])
def test_topologies_match_naive(topology, norm, path):
    models = [net(s) for s in range(4)]
    tie = SoftTie.between(*models, topology=topology, norm=norm, strength=0.7)
    value = tie()
    value.backward()
    got = grads(models)
    zero(models)
    per = [list(m.parameters()) for m in models]
    ref = 0.0
    for g in range(len(per[0])):
        ws = [p[g] for p in per]
        if topology == "chain":
            pairs = [(ws[i], ws[i + 1]) for i in range(3)]
        elif topology == "all_pairs":
            pairs = [(ws[i], ws[j]) for i in range(4) for j in range(i + 1, 4)]
        else:
            mean = sum(ws) / 4
            pairs = [(w, mean) for w in ws]
        ref = ref + 0.7 * sum(naive_phi(norm, x - y) for x, y in pairs)
    ref.backward()
    assert torch.allclose(value, ref, rtol=1e-10)
    for g, r in zip(got, grads(models)):
        assert torch.allclose(g, r, rtol=1e-8, atol=1e-12)
    zero(models)
    tie.backward()        # direct path, .grad None before: set, not added
    for g, r in zip(got, grads(models)):
        assert torch.allclose(g, r, rtol=1e-8, atol=1e-12)


def test_l2_gradient_is_zero_at_equality_not_nan(path):
    a = net(0)
    b = copy.deepcopy(a)
    tie = SoftTie.between(a, b, norm="l2")
    tie().backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in a.parameters())


def test_retain_graph_and_frozen_parameters(path):
    a, b = net(0), net(1)
    a[0].weight.requires_grad_(False)
    tie = SoftTie.between(a, b)
    value = tie()
    value.backward(retain_graph=True)
    first = b[0].weight.grad.clone()
    value.backward()
    assert torch.allclose(b[0].weight.grad, 2 * first)
    assert a[0].weight.grad is None
    zero([a, b])
    tie.backward()
    assert a[0].weight.grad is None and torch.allclose(b[0].weight.grad, first)


def test_include_exclude_mapping_and_module_prefix():
    a, b = net(0), net(1)
    tie = SoftTie.between(a, b, include=["3", "5.weight"], exclude="3.bias")
    assert [g.name for g in tie.groups] == ["3.weight", "5.weight"]

    class Clf(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 3))
            self.head = nn.Linear(3, 2)

    class AE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 3))
            self.decoder = nn.Linear(3, 4)

    c, e = Clf(), AE()
    tie = SoftTie.between(c, e, mapping={"features": "encoder"})
    assert [g.name for g in tie.groups] == ["features.0.weight", "features.0.bias",
                                            "features.1.weight", "features.1.bias"]
    assert "encoder.1.bias" in tie.groups[-1].members[1]
    want = sum(((p - q) ** 2).sum() for p, q in zip(c.features.parameters(),
                                                    e.encoder.parameters()))
    assert torch.allclose(tie(), want)


def test_mixed_dtypes_are_bucketed_and_correct(path):
    a, b = net(0, torch.float32), net(1, torch.float32)
    a[5].double()
    b[5].double()
    tie = SoftTie.between(a, b)
    assert len(tie._buckets) == 2
    v = tie()
    v.backward()
    ref = sum(((p.double() - q.double()) ** 2).sum() for p, q in zip(a.parameters(),
                                                                     b.parameters()))
    assert math.isclose(v.item(), ref.item(), rel_tol=1e-5)
    assert torch.allclose(a[5].weight.grad, 2 * (a[5].weight - b[5].weight))


def test_to_anchor_is_l2sp_and_frozen(path):
    m = net(0)
    state = m.state_dict()           # shares storage with the parameters: must be copied
    anchor = SoftTie.to_anchor(m, state, strength=0.5)
    assert anchor().item() == 0.0
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1)
    n = sum(p.numel() for p in m.parameters())
    value = anchor()
    value.backward()
    assert math.isclose(value.item(), 0.5 * n * 0.1 ** 2, rel_tol=1e-9)
    assert torch.allclose(m[0].weight.grad, torch.full_like(m[0].weight, 0.5 * 2 * 0.1))
    snap = SoftTie.to_anchor(m, strength=0.5)      # a snapshot now: zero, and stays zero
    with torch.no_grad():
        m[0].weight.add_(1.0)
    assert math.isclose(snap().item(), 0.5 * m[0].weight.numel(), rel_tol=1e-9)
    # EWC: fisher weights
    fisher = {n: torch.full_like(p, 2.0) for n, p in m.named_parameters()}
    ewc = SoftTie.to_anchor(m, fisher=fisher)
    assert ewc.norm == "fisher"
    assert math.isclose(ewc().item(), 0.0)


def test_schedules_scale_the_penalty():
    a, b = net(0), net(1)
    base = SoftTie.between(a, b)().item()
    warm = SoftTie.between(a, b, schedule=LinearWarmup(steps=4))
    assert warm().item() == 0.0
    warm.step()
    warm.step()
    assert math.isclose(warm().item(), base / 2, rel_tol=1e-9)
    assert math.isclose(warm(step=100).item(), base, rel_tol=1e-9)
    cos = SoftTie.between(a, b, schedule=Cosine(steps=10, final=0.0))
    assert math.isclose(cos(step=5).item(), base / 2, rel_tol=1e-9)
    assert Constant(2.0)(7) == 2.0
    with pytest.raises(ValueError, match="steps must be >= 1"):
        LinearWarmup(steps=0)
    with pytest.raises(ValueError, match="needs parameters"):
        SoftTie.between(a, b, schedule="cosine")


def test_fisher_is_mean_of_squared_per_sample_gradients_not_square_of_mean():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    fisher = fisher_diagonal(model, [(x[:20], y[:20]), (x[20:], y[20:])], F.cross_entropy)
    # reference: one backward per sample
    sq = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    mean_g = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(32):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in model.named_parameters():
            sq[n] += p.grad ** 2 / 32
            mean_g[n] += p.grad / 32
    for n in sq:
        assert torch.allclose(fisher[n], sq[n], rtol=1e-10, atol=1e-14)
        # the wrong estimate (square of the mean gradient) is smaller, and clearly so
        assert (mean_g[n] ** 2 <= fisher[n] + 1e-15).all()
    total_right = sum(f.sum() for f in fisher.values())
    total_wrong = sum((g ** 2).sum() for g in mean_g.values())
    assert total_wrong < 0.9 * total_right
    assert model.training        # mode restored
    sampled = fisher_diagonal(model, (x, y), F.cross_entropy, sample_labels=True,
                              generator=torch.Generator().manual_seed(0))
    assert all((v >= 0).all() for v in sampled.values())


def test_tie_works_in_training_and_pulls_models_together():
    a, b = net(0, torch.float32), net(1, torch.float32)
    tie = SoftTie.between(a, b, strength=1.0)
    opt = torch.optim.SGD([*a.parameters(), *b.parameters()], lr=0.05)
    start = sum(tie.distances().values())
    for _ in range(20):
        opt.zero_grad()
        tie().backward()
        opt.step()
    assert sum(tie.distances().values()) < 0.1 * start


def test_exported_from_package():
    assert tying.SoftTie is SoftTie


# ------------------------------------------------------------------------- bad input


def test_mismatched_shapes_name_both_parameters_and_shapes():
    a = nn.Sequential(nn.Linear(4, 3))
    b = nn.Sequential(nn.Linear(4, 5))
    with pytest.raises(ValueError) as err:
        SoftTie.between(a, b)
    msg = str(err.value)
    assert "model 0 '0.weight' (3, 4)" in msg and "model 1 '0.weight' (5, 4)" in msg


def test_pattern_matching_nothing_suggests_close_names():
    a, b = net(0), net(1)
    with pytest.raises(ValueError, match=r"include pattern '3\.wieght'.*Close names: 3\.weight"):
        SoftTie.between(a, b, include="3.wieght")
    with pytest.raises(ValueError, match="exclude pattern 'nothing'"):
        SoftTie.between(a, b, exclude="nothing")
    with pytest.raises(ValueError, match="strength pattern 'fc'"):
        SoftTie.between(a, b, strength={"fc": 1.0, "*": 0.1})
    with pytest.raises(ValueError, match="no value for the tied parameter"):
        SoftTie.between(a, b, strength={"0.*": 1.0})
    with pytest.raises(ValueError, match="mapping pattern 'feats'"):
        SoftTie.between(a, b, mapping={"feats": "0"})
    with pytest.raises(ValueError, match="different parameter names"):
        SoftTie.between(a, nn.Linear(2, 2))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_negative_or_nan_strength(bad):
    a, b = net(0), net(1)
    with pytest.raises(ValueError, match="strength must be finite and >= 0"):
        SoftTie.between(a, b, strength=bad)
    with pytest.raises(ValueError, match=r"strength\['\*'\] must be finite"):
        SoftTie.between(a, b, strength={"*": bad})
    with pytest.raises(TypeError, match="strength must be a number"):
        SoftTie.between(a, b, strength="1e-3")


def test_anchor_on_other_dtype_or_device_is_refused():
    m = net(0)
    state32 = {k: v.float() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=r"anchor '0.weight' is \(torch.float32, cpu\).*float64"):
        SoftTie.to_anchor(m, state32)
    meta = {k: v.to("meta") for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="meta"):
        SoftTie.to_anchor(m, meta)
    with pytest.raises(ValueError, match=r"has no entry '5\.bias'"):
        SoftTie.to_anchor(m, {k: v for k, v in m.state_dict().items() if k != "5.bias"})
    with pytest.raises(TypeError, match="state must be"):
        SoftTie.to_anchor(m, [1, 2])


def test_other_bad_arguments():
    a, b = net(0), net(1)
    with pytest.raises(ValueError, match="norm must be one of"):
        SoftTie.between(a, b, norm="l3")
    with pytest.raises(ValueError, match="topology must be one of"):
        SoftTie.between(a, b, topology="ring")
    with pytest.raises(ValueError, match="topology='pair' ties exactly 2"):
        SoftTie.between(a, b, net(2))
    with pytest.raises(ValueError, match="reduction"):
        SoftTie.between(a, b, reduction="max")
    with pytest.raises(ValueError, match="needs fisher="):
        SoftTie.between(a, b, norm="fisher")
    with pytest.raises(ValueError, match="at least 2 models"):
        SoftTie.between(a)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        SoftTie.between(a, "b")


def test_non_finite_distance_names_the_pair(path):
    a, b = net(0), net(1)
    tie = SoftTie.between(a, b, strength=0.1)
    with torch.no_grad():
        b[3].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError,
                       match=r"'3\.weight' between model 0 '3\.weight' and model 1 '3\.weight'"
                             r".*non-finite values in model 1 '3\.weight'"):
        tie()
    with torch.no_grad():
        b[3].weight[0, 0] = 1e200
        a[3].weight[0, 0] = -1e200
    with pytest.raises(FloatingPointError, match="overflowed"):
        tie()
    with pytest.raises(FloatingPointError, match=r"'3\.weight'"):
        tie.backward()
    unchecked = SoftTie.between(a, b, check_finite=False)
    assert not math.isfinite(unchecked().item())
