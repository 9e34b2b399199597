"""The `sws` experiment (quick preset on the embedded digits) and its HashedNets LeNets."""

import json
import math

import pytest
import torch

from tying.experiments import get_experiment, run_experiment
from tying.experiments.sws import hashed_lenet


def test_hashed_lenets_are_smaller_by_their_factor():
    net = hashed_lenet("lenet5caffe", 28, 10, 1 / 16)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    dense = 431_080
    n = sum(p.numel() for p in net.parameters())
    assert dense / 20 < n < dense / 12          # K/(m·n) = 1/16 per layer, biases kept
    mlp = hashed_lenet("lenet300", 8, 10, 1 / 8)
    assert mlp(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_sws_quick(tmp_path):
    assert {"quick", "full"} <= set(get_experiment("sws").presets)
    run_experiment("sws", "quick", out=tmp_path)
    data = json.loads((tmp_path / "sws" / "results.json").read_text())
    assert data["experiment"] == "sws" and data["preset"] == "quick"
    for plot in data["plots"]:
        assert (tmp_path / "sws" / plot).stat().st_size > 1000
    assert "weights_mixture_lenet300.png" in data["plots"]
    rows = next(iter(data["tables"].values()))
    methods = {r["method"].split(" ")[0] for r in rows}
    assert {"soft", "Deep", "k-means", "HashedNets"} <= methods
    assert rows[0]["method"] == "pretrained" and rows[0]["ratio_han"] == 1
    assert rows[1]["method"].startswith("dense control") and rows[1]["ratio_han"] == 1
    for r in rows[2:]:
        assert r["ratio_han"] > 1 and r["file_bytes"] > 0 and 0 <= r["error_after_%"] <= 100
    m = data["metrics"]
    # points lost count from the better dense net: the pretrained one or its prior-free
    # retraining (the dense control), seed by seed
    pre, ctl = m["lenet300_pretrained_error"]["values"], m["lenet300_control_error"]["values"]
    ref = m["lenet300_reference_error"]["values"]
    assert ref == [min(a, b) for a, b in zip(pre, ctl, strict=True)]
    for r in rows:
        assert r["points_lost"] == pytest.approx(r["error_after_%"] - ref[0], abs=0.02)
    # the claims are computed from these numbers, not typed in
    goal_claim = next(c for c in data["claims"] if "≥ 64×" in c["claim"])
    final = [r for r in rows if r["method"].startswith("soft") and "fine-tune" in r["method"]]
    assert final
    err0 = m["lenet300_pretrained_error"]["mean"]
    assert rows[0]["error_after_%"] == pytest.approx(err0, abs=0.01)
    assert goal_claim["holds"] == any(
        r["ratio_han"] >= 64 and r["points_lost"] <= 0.5 for r in final)
    # the shared-value fine-tune keeps the file's structure: same sparsity as pure SWS
    pure = [r for r in rows if r["method"].startswith("soft") and "fine-tune" not in r["method"]]
    assert pure[0]["nonzero_%"] >= final[0]["nonzero_%"] - 1e-9
    # pruning really happened: the SWS file is smaller than float32 and few weights survive
    assert m["lenet300_sws0_ratio_file"]["mean"] > 2
    assert m["lenet300_sws0_nonzero_percent"]["mean"] < 60


def test_curve_interpolation():
    from tying.experiments.sws import _interp_loss_at_ratio, _interp_ratio_at_loss

    pts = [(20.0, 0.1), (40.0, 0.3), (80.0, 0.7)]
    assert _interp_ratio_at_loss(pts, 0.5) == pytest.approx(40.0 * 2 ** 0.5)
    assert _interp_ratio_at_loss(pts, 0.05) is None
    assert _interp_ratio_at_loss(pts, 1.0) == 80.0
    assert _interp_loss_at_ratio(pts, 64.0) == pytest.approx(
        0.3 + 0.4 * math.log(64 / 40) / math.log(2))
    assert _interp_loss_at_ratio(pts, 100.0) is None


@pytest.mark.parametrize("mixture", ["adam", "em"])
def test_sws_retrain_moves_weights_and_mixture(mixture):
    from tying.data import load_digits
    from tying.experiments.sws import _make_priors, _sws_retrain
    from tying.models import LeNet300100

    split = load_digits()
    torch.manual_seed(0)
    net = LeNet300100(split.n_classes, in_features=64)
    cfg = {"pi_zero": 0.9, "components": 5, "gamma": [250.0, 0.1], "gamma_zero": [5000.0, 2.0],
           "init": "kmeans", "per_layer": mixture == "em"}
    priors = _make_priors(net, cfg, "lenet300", torch.Generator().manual_seed(0))
    assert len(priors) == (3 if mixture == "em" else 1)
    before = (priors[0].means.detach().clone(), priors[0]().item())
    w0 = net.hidden[0].weight.detach().clone()
    _sws_retrain(net, priors, split, epochs=1, batch_size=256, generator=torch.Generator(),
                 tau=0.1, tau_end=10.0, mixture=mixture, em_every=2)
    assert not torch.equal(priors[0].means.detach(), before[0])
    assert not torch.equal(net.hidden[0].weight.detach(), w0)
    assert priors[0]().item() < before[1]          # the weights moved toward the mixture
    with pytest.raises(ValueError, match="mixture"):
        _sws_retrain(net, priors, split, epochs=1, batch_size=256,
                     generator=torch.Generator(), mixture="sgd")


def test_full_preset_schedules_per_model_name_their_metrics():
    from tying.experiments.sws import _metric_key, _per_model, _sws_label

    cfg = get_experiment("sws").presets["full"]
    for mname in cfg["models"]:
        schedules = _per_model(cfg, "sws", mname)
        assert schedules, mname
        for k, pt in enumerate(schedules):
            assert _metric_key(mname, _sws_label(pt), cfg) == f"{mname}_sws{k}"
            assert _metric_key(mname, _sws_label(pt) + " + fine-tune", cfg) == \
                f"{mname}_sws{k}_ft"


def test_per_layer_can_differ_per_model():
    from tying.experiments.sws import _make_priors
    from tying.models import LeNet300100

    net = LeNet300100(10, in_features=64)
    cfg = {"pi_zero": 0.9, "components": 5, "init": "range",
           "per_layer": {"lenet300": True, "lenet5caffe": False}}
    g = torch.Generator().manual_seed(0)
    per_layer = _make_priors(net, cfg, "lenet300", g)
    one = _make_priors(net, cfg, "lenet5caffe", g)
    assert [n for p in per_layer for n, _ in p.named_targets()] == \
        [n for n, _ in net.named_parameters() if n.endswith("weight")]
    assert len(per_layer) == 3 and len(one) == 1
    del cfg["per_layer"]                        # absent: one mixture for the model
    assert len(_make_priors(net, cfg, "lenet300", g)) == 1
    assert {n for n, _ in one[0].named_targets()} == {n for p in per_layer
                                                      for n, _ in p.named_targets()}


def test_a_per_model_setting_missing_a_model_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"'pretrain_epochs'.*no value for 'lenet5caffe'"):
        run_experiment("sws", "quick", out=tmp_path,
                       overrides={"models": ["lenet300", "lenet5caffe"],
                                  "pretrain_epochs": {"lenet300": 1}})
    assert not (tmp_path / "sws" / "results.json").exists()


def test_a_curve_point_can_set_its_own_zero_component_prior():
    from tying.experiments.sws import _make_priors, _point_cfg, _sws_label
    from tying.models import LeNet300100

    net = LeNet300100(10, in_features=64)
    cfg = {"pi_zero": 0.99, "components": 5, "init": "range", "gamma_zero": [5000.0, 2.0],
           "per_layer": False}
    g = torch.Generator().manual_seed(0)
    pt = {"tau": 0.01, "tau_end": 10.0, "pi_zero": 0.9, "gamma_zero": [5000.0, 0.5]}
    (own,) = _make_priors(net, _point_cfg(cfg, pt), "lenet300", g)
    (preset,) = _make_priors(net, _point_cfg(cfg, {"tau": 0.01}), "lenet300", g)
    assert (own.pi_zero, own.gamma_zero) == (0.9, (5000.0, 0.5))
    assert (preset.pi_zero, preset.gamma_zero) == (0.99, (5000.0, 2.0))
    assert cfg["pi_zero"] == 0.99                       # the preset itself is untouched
    assert _sws_label(pt) == "soft weight sharing τ=0.01→10.0, π₀=0.9, Γ₀=(5000.0, 0.5)"
    cfg["gamma_zero"] = {"lenet300": [5000.0, 1.0], "lenet5caffe": [5000.0, 2.0]}
    (per_model,) = _make_priors(net, cfg, "lenet300", g)
    assert per_model.gamma_zero == (5000.0, 1.0)


@pytest.mark.parametrize("point", [{"tau": 0.01, "pi0": 0.9}, {"tau_end": 10.0}, 0.01])
def test_a_malformed_curve_point_is_refused_before_training(tmp_path, point):
    with pytest.raises(ValueError, match=r"'sws' point must be a dict with 'tau'"):
        run_experiment("sws", "quick", out=tmp_path, overrides={"sws": [point]})
    assert not (tmp_path / "sws" / "results.json").exists()


@pytest.mark.parametrize("point, key", [({"tau": -0.01}, "'tau'"), ({"tau": 0.0}, "'tau'"),
                                        ({"tau": 0.01, "tau_end": -1.0}, "'tau_end'"),
                                        ({"tau": float("nan")}, "'tau'"),
                                        ({"tau": 0.01, "pi_zero": 1.0}, "'pi_zero'")])
def test_a_bad_tau_or_pi_zero_is_refused_before_training(tmp_path, point, key):
    # a negative τ would silently train with no prior; a negative τ_end makes τ(t) complex
    with pytest.raises(ValueError, match=key):
        run_experiment("sws", "quick", out=tmp_path, overrides={"sws": [point]})
    assert not (tmp_path / "sws" / "results.json").exists()


def test_equal_accuracy_comparison_interpolates_the_other_curve():
    from tying.experiments.sws import _equal_error_pairs, _frontier

    assert _frontier([(10.0, 20.0), (10.5, 15.0), (11.0, 30.0)]) == [(10.0, 20.0), (11.0, 30.0)]
    dc = [(10.0, 10.0), (12.0, 40.0)]
    pairs = _equal_error_pairs([(11.0, 25.0), (13.0, 90.0)], dc)
    # SWS's 11% point against DC's curve: 10·4^0.5 = 20×; DC's 12% point against SWS's
    # curve: 25·3.6^0.5; SWS's 13% and DC's 10% lie outside the other curve's errors
    assert pairs[0] == pytest.approx((11.0, 25.0, 20.0))
    assert pairs[1] == pytest.approx((12.0, 25.0 * 3.6 ** 0.5, 40.0))
    assert len(pairs) == 2
    # no tolerance: an SWS point 0.3 point worse than DC's only point is not "equal accuracy"
    assert _equal_error_pairs([(10.3, 50.0)], [(10.0, 20.0)]) == []
