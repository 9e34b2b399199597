"""The `sws` experiment (quick preset on the embedded digits) and its HashedNets LeNets."""

import json

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
    for r in rows:
        assert r["ratio_han"] > 1 and r["file_bytes"] > 0 and 0 <= r["error_after_%"] <= 100
    m = data["metrics"]
    # the claims are computed from these numbers, not typed in
    goal_claim = next(c for c in data["claims"] if "≥ 64×" in c["claim"])
    final = [r for r in rows if r["method"].startswith("soft") and "fine-tune" in r["method"]]
    assert final
    err0 = m["lenet300_error_pretrained"]["mean"]
    assert goal_claim["holds"] == any(
        r["ratio_han"] >= 64 and r["error_after_%"] - err0 <= 0.5 for r in final)
    # the shared-value fine-tune keeps the file's structure: same sparsity as pure SWS
    pure = [r for r in rows if r["method"].startswith("soft") and "fine-tune" not in r["method"]]
    assert pure[0]["nonzero_%"] >= final[0]["nonzero_%"] - 1e-9
    # pruning really happened: the SWS file is smaller than float32 and few weights survive
    assert m["lenet300_sws_ratio_file"]["mean"] > 2
    assert m["lenet300_sws_nonzero_percent"]["mean"] < 60
