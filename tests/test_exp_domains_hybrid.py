"""The `domains` and `hybrid` experiments on their quick presets (embedded sklearn digits)."""

from __future__ import annotations

import json

import pytest

from tying.experiments import get_experiment, run_experiment


@pytest.mark.parametrize("name", ["domains", "hybrid"])
def test_quick_preset_runs_and_reports(name, tmp_path):
    exp = get_experiment(name)
    assert exp.presets["quick"]["dataset"] == "digits"        # embedded data only
    assert exp.default_seeds["full"] >= 3
    result = run_experiment(name, "quick", out=tmp_path)
    data = json.loads((tmp_path / name / "results.json").read_text())
    assert data["experiment"] == name and data["preset"] == "quick"
    assert data["claims"] and all(isinstance(c["holds"], bool) for c in data["claims"])
    for plot in data["plots"]:
        assert (tmp_path / name / plot).stat().st_size > 1000
    accs = [m["mean"] for k, m in data["metrics"].items()
            if m["unit"] == "accuracy" and " - " not in k]     # not the differences
    assert accs and all(0.0 <= a <= 1.0 for a in accs)
    # learning happened: the best method is far above chance (10 classes)
    assert max(accs) > 0.5
    assert (tmp_path / name / "report.md").read_text().startswith(f"# {name}")
    assert result.seconds < 120


def test_domains_compares_every_method_at_every_label_count(tmp_path):
    cfg = get_experiment("domains").presets["full"]
    assert cfg["labels_per_class"] == [1, 5, 20, 100]
    assert len(cfg["strengths"]) >= 4
    hy = get_experiment("hybrid").presets["full"]
    assert 0.0 in hy["strengths"] and None in hy["strengths"]    # from none to equality
