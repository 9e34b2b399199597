"""The command line and the experiment framework: registry, results.json, reports, README."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tying.cli import main
from tying.experiments import Result, get_experiment, list_experiments, run_experiment
from tying.experiments.report import (
    BENCH_BEGIN,
    BENCH_END,
    README_BEGIN,
    README_END,
    benchmarks_markdown,
    summary_markdown,
    update_readme,
)

ROOT = Path(__file__).resolve().parents[1]


def test_list_shows_every_experiment(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for exp in list_experiments():
        assert exp.name in out
        assert {"quick", "full"} <= set(exp.presets)


def test_unknown_experiment_lists_valid_names(capsys):
    assert main(["run", "memroy"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean memory" in err and "Valid names:" in err
    with pytest.raises(KeyError, match="memory"):
        get_experiment("nope")


def test_python_dash_m_works():
    proc = subprocess.run([sys.executable, "-m", "tying", "list"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "memory" in proc.stdout


def test_memory_quick_run_writes_results_json_report_and_plot(tmp_path):
    res = run_experiment("memory", "quick", out=tmp_path)
    run_dir = tmp_path / "memory"
    data = json.loads((run_dir / "results.json").read_text())
    for key in ("experiment", "preset", "seeds", "config", "environment", "metrics", "claims",
                "plots"):
        assert key in data
    assert data["environment"]["torch"].startswith("2.")
    for m in data["metrics"].values():
        assert set(m) == {"mean", "std", "values", "unit"}
    assert all(set(c) == {"claim", "holds", "evidence"} for c in data["claims"])
    assert (run_dir / "footprint.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Claims" in (run_dir / "report.md").read_text()
    disk = next(c for c in res.claims if "stored on disk" in c.claim)
    assert disk.holds, disk.evidence
    assert Result.read(run_dir / "results.json").metrics.keys() == res.metrics.keys()
    # tying report over the directory
    assert main(["report", str(tmp_path)]) == 0
    assert "memory" in (tmp_path / "summary.md").read_text()


def test_readme_results_block_is_generated_from_results_dir():
    text = (ROOT / "README.md").read_text()
    assert README_BEGIN in text and README_END in text
    block = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert block == summary_markdown(ROOT / "results", "results/").strip(), (
        "README's results block is stale or hand-edited: run `make readme`")
    bench = text.split(BENCH_BEGIN, 1)[1].split(BENCH_END, 1)[0].strip()
    assert bench == benchmarks_markdown(ROOT / "benchmarks" / "results",
                                        "benchmarks/results/").strip(), (
        "README's benchmarks block is stale or hand-edited: run `make readme`")


def test_update_readme_replaces_only_the_generated_block(tmp_path):
    run_dir = tmp_path / "results" / "x"
    run_dir.mkdir(parents=True)
    res = Result("x", "full", [0, 1], {}, description="demo")
    res.add_metric("accuracy", [0.9, 0.8], "%")
    res.add_claim("it works", True, "accuracy 0.85")
    res.write(run_dir)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_BEGIN}\nhand-typed 99%\n{README_END}\noutro\n")
    assert update_readme(readme, tmp_path / "results") is True
    text = readme.read_text()
    assert "hand-typed" not in text and "0.85 ± 0.05" in text
    assert "(results/x/report.md)" in text and text.startswith("intro") and "outro" in text
    assert update_readme(readme, tmp_path / "results") is False


def test_run_all_skips_an_experiment_whose_system_package_is_missing(tmp_path, monkeypatch,
                                                                      capsys):
    import tying.experiments.bdg as bdg
    from tying.errors import SystemPackageMissing
    from tying.experiments import run_all

    def missing(what="x"):
        raise SystemPackageMissing("espeak-ng", what)

    monkeypatch.setattr(bdg, "require_espeak", missing)
    results, skipped = run_all("quick", out=tmp_path, names=["bdg"])
    assert results == []
    assert skipped[0][0] == "bdg" and "apt-get install espeak-ng" in skipped[0][1]
    assert "skipped" in capsys.readouterr().err


def test_set_overrides_a_setting_and_the_report_repeats_it(tmp_path, capsys):
    assert main(["run", "memory", "--out", str(tmp_path), "--set", "step_repeats=2",
                 "--set", 'rss_models=["gpt tied"]']) == 0
    res = Result.read(tmp_path / "memory" / "results.json")
    assert res.config["step_repeats"] == 2 and res.config["rss_models"] == ["gpt tied"]
    assert res.overrides == {"step_repeats": 2, "rss_models": ["gpt tied"]}
    report = (tmp_path / "memory" / "report.md").read_text()
    assert "--set step_repeats=2 --set 'rss_models=[\"gpt tied\"]'" in report


@pytest.mark.parametrize("args, message", [
    (["run", "memory", "--set", "step_repeat=2"], "no setting(s) ['step_repeat']"),
    (["run", "memory", "--set", "step_repeats"], "--set wants KEY=VALUE"),
    (["run", "all", "--set", "step_repeats=2"], "name the experiment"),
    (["run", "memory", "--seeds", "0"], "--seeds must be at least 1"),
    (["run", "all", "--seeds", "0"], "--seeds must be at least 1"),
])
def test_bad_run_settings_are_a_clear_error_before_anything_runs(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "memory" / "results.json").exists()


def test_results_written_before_overrides_existed_still_read():
    data = Result("memory", "quick", [0], {"batch": 4}).to_dict()
    data.pop("overrides")
    res = Result.from_dict(data)
    assert res.overrides == {} and "--set" not in res.to_markdown()
