"""The `mnist1d` and `lenet` experiments (quick presets) and the MNIST-1D loader."""

import json
import random

import numpy as np
import pytest

from tying.data import load_mnist1d
from tying.experiments import get_experiment, run_experiment


def test_mnist1d_is_generated_never_downloaded(monkeypatch):
    import mnist1d.data
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-1D must be generated, not downloaded")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(mnist1d.data, "get_dataset", no_network)
    random.seed(7)
    np.random.seed(7)
    expected_next = (random.random(), np.random.rand())
    random.seed(7)
    np.random.seed(7)
    a = load_mnist1d(num_samples=100, length=32)
    assert (random.random(), np.random.rand()) == expected_next  # global RNG state restored
    b = load_mnist1d(num_samples=100, length=32)
    assert a.x_train.shape == (80, 1, 32) and a.x_test.shape == (20, 1, 32)
    assert (a.x_train == b.x_train).all() and set(a.y_train.tolist()) <= set(range(10))
    assert not (load_mnist1d(num_samples=100, length=32, seed=3).x_train == a.x_train).all()
    with pytest.raises(ValueError, match="unknown MNIST-1D arguments"):
        load_mnist1d(num_samples=100, noise=1)


def _check_run(out, name):
    data = json.loads((out / name / "results.json").read_text())
    assert data["experiment"] == name and data["preset"] == "quick"
    for plot in data["plots"]:
        assert (out / name / plot).stat().st_size > 1000
    claims = {c["claim"]: c for c in data["claims"]}
    return data, claims


def test_mnist1d_quick(tmp_path):
    assert "full" in get_experiment("mnist1d").presets
    run_experiment("mnist1d", "quick", out=tmp_path)
    data, claims = _check_run(tmp_path, "mnist1d")
    m = data["metrics"]
    assert 0 <= m["accuracy_tdnn"]["mean"] <= 100
    length_claim = next(c for k, c in claims.items() if "independent of the length" in k)
    assert length_claim["holds"] is True  # TDNN constant, twin growing: computed in the run
    assert m["params_tdnn"]["mean"] < m["params_tdnn_unshared"]["mean"]
    rows = data["tables"]["Parameters vs. input length"]
    assert len({r["TDNN (ReLU)"] for r in rows}) == 1
    assert "params_vs_length.png" in data["plots"]


def test_lenet_quick(tmp_path):
    run_experiment("lenet", "quick", out=tmp_path)
    data, claims = _check_run(tmp_path, "lenet")
    assert data["metrics"]["params_lenet5"]["mean"] == 60840
    assert claims["LeNet-5 has exactly the paper's 60,840 trainable parameters"]["holds"]
    for key in ("accuracy_lenet5", "accuracy_lenet5_unshared_shift1to4"):
        assert 0 <= data["metrics"][key]["mean"] <= 100
    assert "accuracy_vs_shift.png" in data["plots"]
