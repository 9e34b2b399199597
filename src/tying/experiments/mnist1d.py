"""Experiment `mnist1d`: a TDNN against its unshared twin, an MLP and CNNs on MNIST-1D.

The seed: a TDNN's weights "do not depend on time", so "the number of parameters of such model is
independent of the length of the time series", and sharing "introduces prior knowledge". Measured
here: test accuracy (mean ± std over seeds) of a TDNN, its locally connected twin (same receptive
fields, separate weights per frame), an MLP and two conventional CNNs, all trained with the same
recipe; and parameter count against input length.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.mnist1d import load_mnist1d
from ..data.split import Split
from ..models.mlp import MLP
from ..models.tdnn import TDNN, TDNNLayer
from .registry import register_experiment
from .runner import Context, seed_everything

__all__ = ["accuracy", "random_shift", "train_classifier"]

# The headline TDNN computes every frame: no subsampling, so it is shift-equivariant (away from
# the zero-padded ends) up to the max over time; windows of 5 frames centered on the output
# frame, then contexts {−2, 0, 2} that widen the receptive field to 17 frames as the generic
# CNN's pooling does (18); every layer's input zero-padded by its context (pad="same"), so
# patterns at the edges get full windows.
# Chosen on a validation set of 5,000 fresh sequences (the generator's seed 43, training on the
# 4,000 training sequences); the test set played no part. There (means over 4–8 seeds) it
# reached 98.65%, the subsampled TDNN 98.46%, the generic CNN 98.75%: the CNN stayed marginally
# ahead, the closest any TDNN layout tried came (sparser or wider contexts, mean readout, GELU).
_C5 = (-2, -1, 0, 1, 2)
_TDNN_LAYERS = (TDNNLayer(32, context=_C5), TDNNLayer(64, context=_C5),
                TDNNLayer(64, context=(-2, 0, 2)), TDNNLayer(64, context=(-2, 0, 2)))
# The subsampled TDNN: the same widths, a trainable Subsample(2) (LeNet's S layer) after the
# second layer, half the frames computed in layers 3–4; its input zero-padded by 8 frames.
_SUBSAMPLED_LAYERS = (TDNNLayer(32, window=5),
                      TDNNLayer(64, window=5, subsample=2, trainable_subsample=True),
                      TDNNLayer(64, window=3), TDNNLayer(64, window=3))
_SUBSAMPLED_PAD = 8


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each sequence (B, C, T) by a random whole number of frames in [−s, s], zero-filled."""
    if max_shift <= 0:
        return x
    b, c, t = x.shape
    off = torch.randint(-max_shift, max_shift + 1, (b, 1, 1), generator=generator)
    idx = (torch.arange(t).view(1, 1, t) + max_shift + off).expand(b, c, t)
    return F.pad(x, (max_shift, max_shift)).gather(2, idx)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    model.train()
    return correct / len(x)


def train_classifier(model: nn.Module, split: Split, *, epochs: int, batch_size: int, lr: float,
                     weight_decay: float, generator: torch.Generator,
                     augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     progress: Callable | None = None, desc: str = "train") -> dict:
    """AdamW with a one-cycle learning rate; cross-entropy. Returns accuracy and seconds."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(split.x_train)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    epochs_iter = progress(range(epochs), desc) if progress is not None else range(epochs)
    start = time.perf_counter()
    model.train()
    for _ in epochs_iter:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x = split.x_train[idx]
            if augment is not None:
                x = augment(x)
            loss = F.cross_entropy(model(x), split.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - start
    return {"accuracy": accuracy(model, split.x_test, split.y_test), "seconds": seconds}


class ReferenceCNN(nn.Module):
    """The CNN of the mnist1d repository (3 strided conv layers of 25 channels, ~5k params)."""

    def __init__(self, length: int = 40, channels: int = 25, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        t = length
        for k in (5, 3, 3):
            t = (t + 2 - k) // 2 + 1
        self.linear = nn.Linear(channels * t, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))))
        return self.linear(h.flatten(1))


class GenericCNN(nn.Module):
    """A conventional CNN with the TDNN's widths: 'same' padding, ReLU, max pooling, global max."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(),
            nn.Conv1d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv1d(64, 64, 3, padding=1), nn.ReLU())
        self.linear = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.body(x).amax(dim=2))


def _tdnn(length: int, activation: str, shared: bool = True) -> TDNN:
    return TDNN(1, _TDNN_LAYERS, 10, readout="max", activation=activation, shared=shared,
                input_length=length, pad="same")


def _tdnn_subsampled(length: int) -> TDNN:
    return TDNN(1, _SUBSAMPLED_LAYERS, 10, readout="max", activation="relu",
                input_length=length, pad=_SUBSAMPLED_PAD)


def build_model(name: str, length: int) -> nn.Module:
    builders = {
        "tdnn": lambda: _tdnn(length, "relu"),
        "tdnn_tanh": lambda: _tdnn(length, "tanh"),
        "tdnn_subsampled": lambda: _tdnn_subsampled(length),
        "tdnn_unshared": lambda: _tdnn(length, "relu", shared=False),
        "mlp": lambda: MLP(length, (100, 100), 10),
        "cnn_reference": lambda: ReferenceCNN(length),
        "cnn_generic": lambda: GenericCNN(),
    }
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; valid: {sorted(builders)}")
    return builders[name]()


_LABELS = {"tdnn": "TDNN (ReLU)", "tdnn_tanh": "TDNN (tanh, the seed's)",
           "tdnn_subsampled": "TDNN, subsampled ×2",
           "tdnn_unshared": "TDNN's unshared twin", "mlp": "MLP 100-100",
           "cnn_reference": "CNN (mnist1d reference)", "cnn_generic": "CNN (generic)"}
_CNNS = ("cnn_reference", "cnn_generic")


# Accuracies are counts over the same test set: equal counts are a tie ("no worse"), whatever
# the float rounding of their means.
_TIE = 1e-9


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@register_experiment(
    "mnist1d",
    description="Sharing across time: a TDNN vs. its locally connected twin, an MLP and CNNs on "
                "MNIST-1D; parameters vs. input length.",
    presets={
        "quick": {"num_samples": 600, "epochs": 3, "batch_size": 64, "lr": 1e-2,
                  "weight_decay": 0.01, "max_shift": 3,
                  "models": ["tdnn", "tdnn_unshared", "mlp", "cnn_reference"],
                  "lengths": [40, 80, 160, 320]},
        "full": {"num_samples": 5000, "epochs": 60, "batch_size": 128, "lr": 1e-2,
                 "weight_decay": 0.01, "max_shift": 3,
                 "models": ["tdnn", "tdnn_subsampled", "tdnn_unshared", "mlp", "cnn_reference",
                            "cnn_generic"],
                 "lengths": [40, 80, 160, 320, 640, 1280]},
    },
)
def run_mnist1d(ctx: Context):
    cfg = ctx.config
    res = ctx.result()
    split = load_mnist1d(cfg["num_samples"])  # the package's generator, seed 42: no download
    length = split.x_train.shape[2]
    models = list(cfg["models"])
    acc: dict[str, list[float]] = {m: [] for m in models}
    secs: dict[str, list[float]] = {m: [] for m in models}
    for seed in ctx.seeds:
        for name in models:
            g = seed_everything(seed)
            model = build_model(name, length)
            out = train_classifier(
                model, split, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                weight_decay=cfg["weight_decay"], generator=g,
                augment=lambda x, g=g: random_shift(x, cfg["max_shift"], g),
                progress=ctx.progress, desc=f"seed {seed} {name}")
            acc[name].append(100.0 * out["accuracy"])
            secs[name].append(out["seconds"])
    params = {m: n_params(build_model(m, length)) for m in models}
    for m in models:
        res.add_metric(f"accuracy_{m}", acc[m], "%")
    for m in models:
        res.add_metric(f"params_{m}", [params[m]], "")
    res.add_table("Test accuracy on MNIST-1D", [
        {"model": _LABELS[m], "parameters": params[m],
         "accuracy (%)": f"{np.mean(acc[m]):.2f} ± {np.std(acc[m]):.2f}",
         "train seconds": round(float(np.mean(secs[m])), 1)} for m in models])

    # Parameters against input length: the shared TDNN stays, the twin (and MLP, CNN head) grow.
    lengths = list(cfg["lengths"])
    curve = {m: [n_params(build_model(m, t)) for t in lengths]
             for m in ("tdnn", "tdnn_unshared", "mlp", "cnn_reference")}
    res.add_table("Parameters vs. input length", [
        {"T": t, **{_LABELS[m]: curve[m][i] for m in curve}} for i, t in enumerate(lengths)])
    tdnn_const = len(set(curve["tdnn"])) == 1
    twin_grows = all(b > a for a, b in zip(curve["tdnn_unshared"], curve["tdnn_unshared"][1:]))
    res.add_claim("A TDNN's parameter count is independent of the length of the time series; "
                  "its unshared twin's grows with it",
                  tdnn_const and twin_grows,
                  f"T = {lengths}: TDNN {curve['tdnn']}; twin {curve['tdnn_unshared']}")

    tdnn = float(np.mean(acc["tdnn"]))
    res.add_claim("Goal: the TDNN reaches ≥ 98% test accuracy (mean over seeds)", tdnn >= 98.0,
                  f"TDNN {tdnn:.2f} ± {np.std(acc['tdnn']):.2f}% over {len(ctx.seeds)} seed(s)")
    cnns = [m for m in models if m in _CNNS]
    if cnns:
        best = max(cnns, key=lambda m: np.mean(acc[m]))
        best_acc = float(np.mean(acc[best]))
        res.add_claim("Goal: the TDNN is no worse than the best conventional CNN in the same run "
                      "(mean over seeds)", tdnn >= best_acc - _TIE,
                      f"TDNN {tdnn:.2f} ± {np.std(acc['tdnn']):.2f}% vs. {_LABELS[best]} "
                      f"{best_acc:.2f} ± {np.std(acc[best]):.2f}%: a difference of "
                      f"{tdnn - best_acc:+.2f} point over {len(ctx.seeds)} seed(s)")
    if "tdnn_unshared" in acc:
        twin = float(np.mean(acc["tdnn_unshared"]))
        res.add_claim("Sharing introduces prior knowledge: the TDNN beats its unshared twin with "
                      "fewer parameters", tdnn > twin and params["tdnn"] < params["tdnn_unshared"],
                      f"TDNN {tdnn:.2f}% with {params['tdnn']:,} parameters vs. twin "
                      f"{twin:.2f}% with {params['tdnn_unshared']:,}")
    res.add_claim("The TDNN beats the published MNIST-1D anchors (CNN 94%, human 96%)",
                  tdnn > 96.0, f"TDNN {tdnn:.2f}%")

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, style in (("tdnn", "o-"), ("tdnn_unshared", "s-"), ("mlp", "^--"),
                     ("cnn_reference", "v--")):
        ax.plot(lengths, curve[m], style, label=_LABELS[m])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("input length T (frames)")
    ax.set_ylabel("parameters")
    ax.set_title("Parameters vs. input length")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    ctx.save_plot(res, fig, "params_vs_length.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    means = [np.mean(acc[m]) for m in models]
    stds = [np.std(acc[m]) for m in models]
    ax.bar(range(len(models)), means, yerr=stds, capsize=4,
           color=["C0" if m.startswith("tdnn") and m != "tdnn_unshared" else "C1"
                  if m == "tdnn_unshared" else "C7" for m in models])
    ax.set_xticks(range(len(models)), [f"{_LABELS[m]}\n{params[m]:,} p." for m in models],
                  rotation=30, ha="right", fontsize=8)
    for ref, lab in ((94.0, "published CNN 94%"), (96.0, "human 96%")):
        ax.axhline(ref, ls=":", color="k", lw=1)
        ax.text(len(models) - 0.5, ref, lab, va="bottom", ha="right", fontsize=8)
    ax.set_ylim(max(0.0, min(means) - 10), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"MNIST-1D, mean ± std over {len(ctx.seeds)} seed(s)")
    ctx.save_plot(res, fig, "accuracy.png")

    res.notes += [
        f"MNIST-1D generated locally with mnist1d's make_dataset (seed 42, "
        f"{len(split.x_train)} train / {len(split.x_test)} test, length {length}); no download.",
        f"All models trained alike: AdamW (lr {cfg['lr']}, one-cycle, weight decay "
        f"{cfg['weight_decay']}), batch {cfg['batch_size']}, {cfg['epochs']} epochs, random "
        f"shifts of ±{cfg['max_shift']} frames.",
        "TDNN: TimeDelay 32@(−2…2) → 64@(−2…2) → 64@{−2, 0, 2} → 64@{−2, 0, 2}, ReLU, every "
        "layer's input zero-padded by its context (pad='same'), max over time, linear: the "
        f"generic CNN's widths, {n_params(build_model('tdnn', length)):,} parameters (the CNN "
        f"{n_params(build_model('cnn_generic', length)):,}). Subsampled TDNN: input zero-padded by "
        f"{_SUBSAMPLED_PAD} frames, 32@window 5 → 64@5 → trainable Subsample(2) → 64@3 → 64@3. "
        "The TDNN's layout was chosen on 5,000 fresh validation sequences (the generator's seed "
        "43), where the generic CNN stayed marginally ahead of it; the subsampled TDNN's "
        "padding on a 3,000/1,000 split of the training set. The test set played no part. The "
        "twin swaps each TimeDelay for a LocallyConnected1d with the same context and padding.",
    ]
    return res
