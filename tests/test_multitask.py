"""Multi-task networks (tying.models.multitask) and the training loop (tying.multitask):
sharing seen by tying's own tools, penalties and weightings against hand computations, the loop
against a hand-written one, and every kind of bad input naming the task."""

from __future__ import annotations

import doctest

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tying
import tying.models.multitask
import tying.multitask
from tying.models import CrossStitchNet, HardSharedTrunk, TaskTowers
from tying.multitask import (
    EqualWeighting,
    UncertaintyWeighting,
    check_tasks,
    evaluate_multitask,
    train_multitask,
)

TASKS = {"a": 3, "b": 2, "c": 4}      # task -> outputs


def trunk() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU())


def tower(n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Sequential(nn.Linear(5, 8), nn.ReLU()),
                         nn.Sequential(nn.Linear(8, 6), nn.ReLU()), nn.Linear(6, n_out))


def hard_net(seed: int = 0) -> HardSharedTrunk:
    torch.manual_seed(seed)
    return HardSharedTrunk(trunk(), {t: nn.Linear(6, k) for t, k in TASKS.items()})


def toy_data(n: int = 40, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (t, k) in enumerate(TASKS.items()):
        x = torch.randn(n, 5, generator=g)
        out[t] = (x, (x[:, i] > 0).long() * (k - 1))     # learnable: the sign of one input
    return out


@pytest.mark.parametrize("module", [tying.models.multitask, tying.multitask])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------- hard sharing


def test_hard_trunk_is_one_set_seen_by_footprint_and_verify():
    net = hard_net()
    for name in ("a", "b", "c"):
        for p, q in zip(net.trunk_of("a").parameters(), net.trunk_of(name).parameters()):
            assert p is q
    n_trunk = sum(p.numel() for p in trunk().parameters())
    n_heads = sum(6 * k + k for k in TASKS.values())
    fp = tying.footprint(net)
    assert fp.unique_params == n_trunk + n_heads
    assert fp.virtual_params == 3 * n_trunk + n_heads
    assert len(fp.groups) == 4 and all(len(g.members) == 3 for g in fp.groups)
    assert tying.verify(net)
    # the optimizer sees the trunk once
    assert sum(p.numel() for p in net.parameters()) == fp.unique_params


def test_hard_trunk_broken_tie_is_reported():
    net = hard_net()
    net.trunk_of("c")[0].weight = nn.Parameter(net.trunk_of("c")[0].weight.detach().clone())
    with pytest.raises(tying.TieError, match=r"0\.weight"):
        tying.verify(net)


def test_hard_trunk_save_load_round_trip(tmp_path):
    net = hard_net(seed=0)
    path = tmp_path / "mt.safetensors"
    tying.save(net, path)
    torch.manual_seed(0)
    untied = TaskTowers({t: nn.Sequential(trunk(), nn.Linear(6, k)) for t, k in TASKS.items()})
    tying.save(untied, tmp_path / "untied.safetensors")
    trunk_bytes = sum(p.numel() * 4 for p in trunk().parameters())
    # the trunk is stored once, not three times
    assert (tmp_path / "untied.safetensors").stat().st_size - path.stat().st_size >= \
        2 * trunk_bytes
    fresh = hard_net(seed=1)
    x = torch.randn(7, 5)
    assert not torch.allclose(fresh(x, task="b"), net(x, task="b"))
    tying.load(fresh, path)
    for t in TASKS:
        torch.testing.assert_close(fresh(x, task=t), net(x, task=t))
    assert fresh.trunk_of("a")[0].weight is fresh.trunk_of("c")[0].weight
    tying.verify(fresh)


def test_hard_forward_all_tasks_equals_each_task():
    net = hard_net()
    x = torch.randn(4, 5)
    every = net(x)
    assert list(every) == ["a", "b", "c"]
    for t, k in TASKS.items():
        assert every[t].shape == (4, k)
        torch.testing.assert_close(every[t], net(x, task=t))


def test_hard_bad_input():
    with pytest.raises(ValueError, match="no task 'd'"):
        hard_net()(torch.randn(2, 5), task="d")
    with pytest.raises(TypeError, match=r"heads\['b'\]"):
        HardSharedTrunk(trunk(), {"a": nn.Linear(6, 2), "b": "linear"})
    with pytest.raises(ValueError, match="empty"):
        HardSharedTrunk(trunk(), {})
    with pytest.raises(TypeError, match="trunk"):
        HardSharedTrunk(None, {"a": nn.Linear(6, 2)})


# ----------------------------------------------------------------------------- soft sharing


def test_soft_tie_star_matches_hand_computation():
    torch.manual_seed(0)
    net = TaskTowers({t: tower(k) for t, k in TASKS.items()})
    lam = 0.25
    penalty = net.soft_tie(include=["0.*", "1.*"], strength=lam, topology="star")
    expected = 0.0
    for name in ("0.0.weight", "0.0.bias", "1.0.weight", "1.0.bias"):
        ws = [dict(net.towers[t].named_parameters())[name] for t in TASKS]
        mean = torch.stack(ws).mean(0)
        expected += lam * sum(float((w - mean).square().sum().detach()) for w in ws)
    assert penalty().item() == pytest.approx(expected, rel=1e-5)
    pairs = net.soft_tie(include=["0.*", "1.*"], strength=lam, topology="all_pairs")
    expected_pairs = 0.0
    names = list(TASKS)
    for name in ("0.0.weight", "0.0.bias", "1.0.weight", "1.0.bias"):
        ws = [dict(net.towers[t].named_parameters())[name] for t in names]
        expected_pairs += lam * sum(float((ws[i] - ws[j]).square().sum().detach())
                                    for i in range(3) for j in range(i + 1, 3))
    assert pairs().item() == pytest.approx(expected_pairs, rel=1e-5)
    l1 = net.soft_tie(include=["0.*", "1.*"], strength=lam, topology="star", norm="l1")
    expected_l1 = 0.0
    for name in ("0.0.weight", "0.0.bias", "1.0.weight", "1.0.bias"):
        ws = [dict(net.towers[t].named_parameters())[name].detach() for t in names]
        mean = torch.stack(ws).mean(0)
        expected_l1 += lam * sum(float((w - mean).abs().sum()) for w in ws)
    assert l1().item() == pytest.approx(expected_l1, rel=1e-5)


def test_soft_tie_pulls_towers_together_during_training():
    torch.manual_seed(0)
    net = TaskTowers({t: tower(k) for t, k in TASKS.items()})
    penalty = net.soft_tie(include=["0.*", "1.*"], strength=1.0)
    start = sum(penalty.distances().values())
    hist = train_multitask(net, toy_data(), steps=40, lr=1e-2, penalty=penalty,
                           generator=torch.Generator().manual_seed(0))
    assert sum(penalty.distances().values()) < 0.5 * start
    assert len(hist.penalty) == 40 and penalty.steps == 40


def test_soft_tie_towers_of_different_structure_name_the_task():
    towers = {"a": tower(3), "b": tower(3), "wide": nn.Sequential(
        nn.Sequential(nn.Linear(5, 9), nn.ReLU()), nn.Sequential(nn.Linear(9, 6), nn.ReLU()),
        nn.Linear(6, 3))}
    net = TaskTowers(towers)
    with pytest.raises(ValueError, match="task 'wide'"):
        net.soft_tie()
    with pytest.raises(ValueError, match="task 'wide'"):
        net.soft_tie(include=["0.*", "1.*"])
    # heads of different size are fine when only the lower stages are tied
    ok = TaskTowers({t: tower(k) for t, k in TASKS.items()})
    with pytest.raises(ValueError, match="task 'b'"):
        ok.soft_tie()                                      # the heads differ
    assert len(ok.soft_tie(exclude="2.*").groups) == 4
    with pytest.raises(ValueError, match="at least 2 tasks"):
        TaskTowers({"a": tower(2)}).soft_tie()
    with pytest.raises(ValueError, match="tasks="):
        TaskTowers(lambda: tower(2))


# ----------------------------------------------------------------------------- cross-stitch


def test_cross_stitch_identity_equals_independent_towers():
    torch.manual_seed(0)
    towers = {t: tower(k) for t, k in TASKS.items()}
    net = CrossStitchNet(towers, channels=[8, 6], self_weight=1.0)
    x = torch.randn(5, 5)
    out = net(x)
    for t in TASKS:
        torch.testing.assert_close(out[t], towers[t](x))
        torch.testing.assert_close(net(x, task=t), towers[t](x))
    assert tying.footprint(net).unique_params == (
        sum(p.numel() for m in towers.values() for p in m.parameters()) + 8 * 9 + 6 * 9)


def test_cross_stitch_mixes_and_learns_alpha():
    torch.manual_seed(0)
    net = CrossStitchNet({t: tower(k) for t, k in TASKS.items()}, channels=[8, None])
    before = [u.weight.detach().clone() for u in net.stitches]
    x = torch.randn(5, 5)
    mixed = net(x, task="a")
    apart = net.towers["a"](x)
    assert not torch.allclose(mixed, apart)
    train_multitask(net, toy_data(), steps=5, lr=1e-2, generator=torch.Generator().manual_seed(0))
    assert all(not torch.equal(b, u.weight) for b, u in zip(before, net.stitches))


def test_cross_stitch_towers_of_different_structure_name_the_task():
    towers = {"a": tower(3), "b": tower(2)}
    towers["odd"] = nn.Sequential(nn.Sequential(nn.Linear(5, 8), nn.ReLU()),
                                  nn.Sequential(nn.Linear(8, 7), nn.ReLU()), nn.Linear(7, 2))
    with pytest.raises(ValueError, match=r"task 'odd'.*1\.0\.weight"):
        CrossStitchNet(towers)
    short = {"a": tower(3), "short": nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 3))}
    with pytest.raises(ValueError, match="task 'short' has 2 stages"):
        CrossStitchNet(short)
    with pytest.raises(ValueError, match="one entry per unit"):
        CrossStitchNet({"a": tower(3), "b": tower(3)}, channels=[8])
    with pytest.raises(ValueError, match="at least 2 tasks"):
        CrossStitchNet({"a": tower(3)})
    with pytest.raises(TypeError, match=r"towers\['b'\]"):
        CrossStitchNet({"a": tower(3), "b": nn.Linear(2, 2)})
    net = CrossStitchNet({"a": tower(3), "b": tower(2)})
    with pytest.raises(ValueError, match="missing"):
        net({"a": torch.zeros(2, 5)})


# ----------------------------------------------------------------------------- weightings


def test_weightings_against_hand_formulas():
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(0.5)}
    assert EqualWeighting()(losses).item() == pytest.approx(2.5)
    w = UncertaintyWeighting(["a", "b"])
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.3, -1.2]))
    want = sum(0.5 * torch.exp(-s) * v + 0.5 * s
               for s, v in zip(torch.tensor([0.3, -1.2]), (2.0, 0.5)))
    total = w(losses)
    assert total.item() == pytest.approx(float(want), rel=1e-6)
    total.backward()
    # d/ds (½ e^{-s} L + ½ s) = ½ - ½ e^{-s} L
    torch.testing.assert_close(w.log_vars.grad, 0.5 - 0.5 * torch.exp(-w.log_vars.detach())
                               * torch.tensor([2.0, 0.5]))
    with pytest.raises(ValueError, match="got losses for"):
        w({"b": torch.tensor(1.0), "a": torch.tensor(1.0)})


def test_uncertainty_weighting_learns_and_is_recorded():
    net = hard_net()
    hist = train_multitask(net, toy_data(), steps=30, lr=2e-2, weighting="uncertainty",
                           generator=torch.Generator().manual_seed(0))
    assert set(hist.weights) == set(TASKS) and len(hist.weights["a"]) == 30
    assert hist.weights["a"][0] != hist.weights["a"][-1]        # s_t moved


# ----------------------------------------------------------------------------- training loop


def test_loop_learns_and_evaluates():
    net = hard_net()
    data = toy_data(80)
    before = evaluate_multitask(net, data)
    hist = train_multitask(net, data, steps=120, lr=1e-2,
                           generator=torch.Generator().manual_seed(0))
    after = evaluate_multitask(net, data)
    assert all(after[t] > 0.85 for t in TASKS), after
    assert sum(after.values()) > sum(before.values())
    assert hist.total[-1] < hist.total[0]
    assert net.training                                   # evaluate restored the mode


def test_loop_equals_a_hand_written_loop():
    """The loop can be replaced: the same steps by hand give the same parameters."""
    data = toy_data(50)
    a, b = hard_net(3), hard_net(3)
    train_multitask(a, data, steps=6, lr=1e-2, batch_size=16,
                    generator=torch.Generator().manual_seed(5))
    opt = torch.optim.Adam(b.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(5)
    for _ in range(6):
        losses = {}
        for t in check_tasks(b, data):
            x, y = data[t]
            idx = torch.randint(0, len(x), (16,), generator=g)
            losses[t] = F.cross_entropy(b(x[idx], task=t), y[idx])
        opt.zero_grad()
        EqualWeighting()(losses).backward()
        opt.step()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=n)


def test_loop_follows_the_model_dtype_and_device_and_per_task_losses():
    net = hard_net().double()
    data = {t: (x.double(), y) for t, (x, y) in toy_data().items()}
    seen = []

    def loss_b(out, y):
        seen.append(out.dtype)
        return F.cross_entropy(out, y)

    hist = train_multitask(net, data, steps=3, device="cpu",
                           losses={"a": F.cross_entropy, "b": loss_b, "c": F.cross_entropy},
                           on_step=lambda step, values: seen.append(step))
    assert seen == [torch.float64, 0, torch.float64, 1, torch.float64, 2]
    assert len(hist.losses["c"]) == 3


def test_given_optimizer_must_hold_the_weighting_parameters():
    net = hard_net()
    w = UncertaintyWeighting(list(TASKS))
    with pytest.raises(ValueError, match="log_vars"):
        train_multitask(net, toy_data(), steps=1, weighting=w,
                        optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
    opt = torch.optim.SGD([*net.parameters(), *w.parameters()], lr=0.1)
    train_multitask(net, toy_data(), steps=1, weighting=w, optimizer=opt)
    assert w.log_vars.grad is not None


# ----------------------------------------------------------------------------- bad input


def test_task_names_must_match_between_data_heads_and_losses():
    net, data = hard_net(), toy_data()
    with pytest.raises(ValueError, match="head for task 'c' but data has no entry"):
        train_multitask(net, {t: data[t] for t in ("a", "b")}, steps=1)
    with pytest.raises(ValueError, match="data has task 'd' but the model has no head"):
        train_multitask(net, {**data, "d": data["a"]}, steps=1)
    with pytest.raises(ValueError, match="task 'c' has no loss"):
        train_multitask(net, data, steps=1, losses={"a": F.cross_entropy,
                                                     "b": F.cross_entropy})
    with pytest.raises(ValueError, match="loss is given for task 'z'"):
        train_multitask(net, data, steps=1, losses={"a": F.cross_entropy, "b": F.cross_entropy,
                                                     "c": F.cross_entropy, "z": F.cross_entropy})
    with pytest.raises(ValueError,
                       match="task 'x' is not a task of the model; task 'c' has no weight"):
        train_multitask(net, data, steps=1, weighting=UncertaintyWeighting(["a", "b", "x"]))
    with pytest.raises(ValueError, match="head for task 'b' but data has no entry"):
        evaluate_multitask(net, {"a": data["a"], "c": data["c"]})


def test_head_for_a_task_with_no_data_names_the_task():
    net, data = hard_net(), toy_data()
    empty = (torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="task 'b' has no data"):
        train_multitask(net, {**data, "b": empty}, steps=1)
    with pytest.raises(ValueError, match="task 'a': 40 inputs but 3 labels"):
        check_tasks(net, {**data, "a": (data["a"][0], data["a"][1][:3])})
    with pytest.raises(TypeError, match=r"data\['a'\]"):
        check_tasks(net, {**data, "a": data["a"][0]})
    with pytest.raises(ValueError, match="weighting must be one of"):
        train_multitask(net, data, steps=1, weighting="magic")
    with pytest.raises(ValueError, match="steps"):
        train_multitask(net, data, steps=-1)
