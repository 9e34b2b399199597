"""The `multitask` experiment: its quick preset end to end (embedded digits), its task builders,
and that its parameter numbers are tying.footprint's."""

from __future__ import annotations

import json

import pytest
import torch

import tying
from tying.data import load_digits
from tying.experiments import get_experiment, run_experiment
from tying.experiments.multitask import TASKS, _build, make_domain_tasks, make_tasks


def test_quick_preset_runs_and_reports(tmp_path):
    exp = get_experiment("multitask")
    assert exp.presets["quick"]["dataset"] == "digits"          # embedded data only
    result = run_experiment("multitask", "quick", out=tmp_path)
    data = json.loads((tmp_path / "multitask" / "results.json").read_text())
    assert data["experiment"] == "multitask" and data["preset"] == "quick"
    assert len(data["claims"]) >= 2 and all(isinstance(c["holds"], bool) for c in data["claims"])
    assert sorted(data["plots"]) == ["accuracy_per_task.png", "accuracy_vs_strength.png"]
    for plot in data["plots"]:
        assert (tmp_path / "multitask" / plot).stat().st_size > 1000
    m = data["metrics"]
    accs = {k: v["mean"] for k, v in m.items() if v["unit"] == "accuracy" and " - " not in k}
    assert accs and all(0.0 <= a <= 1.0 for a in accs.values())
    for task in TASKS["digits"]:                                  # every task, every method
        assert f"single-task @ 3/class: {task}" in accs and f"cross-stitch @ 3/class: {task}" \
            in accs
    assert accs["hard (equal) @ 3/class: digit"] > 0.3              # far above chance (0.1)
    # the parameters reported are those of the models, as footprint counts them
    _, _, n_out = make_tasks(load_digits(), TASKS["digits"], 3, torch.Generator().manual_seed(0))
    hidden = exp.presets["quick"]["hidden"]
    for method in ("single-task", "hard (equal)", "cross-stitch"):
        fp = tying.footprint(_build(method, 0, 64, hidden, n_out))
        assert m[f"{method}: unique parameters"]["mean"] == fp.unique_params
        assert m[f"{method}: virtual parameters"]["mean"] == fp.virtual_params
    hard_claim = [c for c in data["claims"] if c["claim"].startswith("Hard sharing reduces")]
    assert hard_claim and hard_claim[0]["holds"] is (
        m["hard (equal): unique parameters"]["mean"] < m["single-task: unique parameters"]["mean"]
        and m["hard (equal): checkpoint bytes"]["mean"]
        < m["single-task: checkpoint bytes"]["mean"])
    assert (tmp_path / "multitask" / "report.md").read_text().startswith("# multitask")
    assert result.seconds < 60


def test_full_preset_meets_the_issue():
    exp = get_experiment("multitask")
    full = exp.presets["full"]
    assert full["dataset"] == "fashion_mnist" and exp.default_seeds["full"] >= 3
    assert len(TASKS[full["dataset"]]) >= 3 and len(full["strengths"]) >= 3
    assert min(full["labels_per_class"]) <= 20                     # scarce labels


def test_label_tasks_are_disjoint_samples_with_mapped_labels():
    split = load_digits()
    maps = TASKS["digits"]
    train, test, n_out = make_tasks(split, maps, 4, torch.Generator().manual_seed(1))
    assert n_out == {"digit": 10, "parity": 2, "large": 2}
    rows = [{tuple(r.flatten().tolist()) for r in train[t][0]} for t in maps]
    assert all(len(r) == 40 for r in rows)                         # 4/class × 10 classes
    assert not (rows[0] & rows[1]) and not (rows[1] & rows[2]) and not (rows[0] & rows[2])
    # the parity labels of the test set are the digits' parities
    assert torch.equal(test["parity"][1], split.y_test % 2)
    with pytest.raises(ValueError, match="fewer than"):
        make_tasks(split, maps, 100, torch.Generator().manual_seed(1))


def test_domain_tasks_are_shifted_copies():
    split = load_digits()
    shifts = {"upright": {}, "turned": {"rotation": 30.0, "contrast": 0.7, "noise": 0.0}}
    train, test, n_out = make_domain_tasks(split, shifts, 2, torch.Generator().manual_seed(0))
    assert n_out == {"upright": 10, "turned": 10}
    assert torch.equal(test["upright"][0], split.x_test)
    assert not torch.allclose(test["turned"][0], split.x_test)
    assert torch.equal(test["turned"][1], split.y_test)
    assert len(train["turned"][0]) == 20
