"""`multitask`: single-task vs. hard sharing vs. soft-tied towers vs. cross-stitch, few labels.

Tasks: T = 3 label sets of the same images (Fashion-MNIST on the full preset, sklearn digits on
the quick one): the 10 classes themselves, a coarse grouping and a binary split (see `TASKS`).
Each task gets its *own* small labelled sample (``labels_per_class`` images of each of the 10
base classes, disjoint across tasks), so a method that shares parameters sees 3× as many
images for what it shares, which is the point of the claim: sharing helps when labels are
scarce. Every task is tested on the whole test set.

Models, all built from one tower = stage 0 (Flatten → Linear → ReLU), stage 1 (Linear →
ReLU), head (Linear, one output per class of the task):

- ``single-task``: `tying.models.TaskTowers`, independent towers;
- ``hard``: `tying.models.HardSharedTrunk` (stages 0–1 made one set with `tying.share`), with
  equal weighting and with uncertainty weighting (Kendall et al. 2018);
- ``soft λ``: `TaskTowers.soft_tie` on stages 0–1, star topology, squared L2, λ swept;
- ``cross-stitch``: `tying.models.CrossStitchNet`, channel-wise units after stages 0 and 1.

All are trained by `tying.multitask.train_multitask` with the same steps, batch and Adam lr.
Parameters come from `tying.footprint` (unique and virtual) and from the size of the file
`tying.save` writes.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
from torch import nn

from ..checkpoint import save
from ..data import Split, load_digits, load_fashion_mnist, shift_domain
from ..footprint import footprint
from ..hard import verify
from ..models.multitask import CrossStitchNet, HardSharedTrunk, TaskTowers
from ..multitask import evaluate_multitask, train_multitask
from .registry import register_experiment
from .runner import seed_everything

__all__ = ["TASKS", "make_domain_tasks", "make_tasks"]

# task name -> label of each of the 10 base classes
TASKS = {
    "digits": {
        "digit": list(range(10)),
        "parity": [c % 2 for c in range(10)],
        "large": [int(c >= 5) for c in range(10)],
    },
    "fashion_mnist": {
        "item": list(range(10)),
        # tops (T-shirt, pullover, coat, shirt) / trouser, dress / footwear / bag
        "group": [0, 1, 0, 1, 0, 2, 0, 2, 3, 2],
        "parity": [c % 2 for c in range(10)],
    },
}


def make_tasks(split, label_maps: dict[str, list[int]], per_class: int,
               generator: torch.Generator) -> tuple[dict, dict, dict[str, int]]:
    """Disjoint labelled samples per task: (train {task: (x, y)}, test {task: (x, y)}, classes).

    Task t gets ``per_class`` training images of each base class, none shared with another task;
    its labels are ``label_maps[t][base class]``. The test set is the whole test set, relabelled.
    """
    tasks = list(label_maps)
    train, test, n_out = {}, {}, {}
    idx_of = _disjoint(split, len(tasks), per_class, generator)
    for t in tasks:
        lut = torch.tensor(label_maps[t])
        sel = idx_of[tasks.index(t)]
        train[t] = (split.x_train[sel], lut[split.y_train[sel]])
        test[t] = (split.x_test, lut[split.y_test])
        n_out[t] = int(lut.max()) + 1
    return train, test, n_out


def make_domain_tasks(split, shifts: dict[str, dict], per_class: int,
                      generator: torch.Generator) -> tuple[dict, dict, dict[str, int]]:
    """Shifted copies as tasks: task t classifies the same classes in its own domain.

    Task t's images are ``shift_domain(split, **shifts[t])`` (rotation, contrast, noise); its
    ``per_class`` labelled training images of each class are disjoint from the other tasks'
    (drawn from different original images). Tested on the shifted copy of the whole test set.
    """
    tasks = list(shifts)
    idx_of = _disjoint(split, len(tasks), per_class, generator)
    train, test, n_out = {}, {}, {}
    for i, t in enumerate(tasks):
        sel = idx_of[i]
        sub = Split(split.x_train[sel], split.y_train[sel], split.x_test, split.y_test,
                    split.n_classes, split.name)
        dom = shift_domain(sub, **shifts[t]) if shifts[t] else sub
        train[t] = (dom.x_train, dom.y_train)
        test[t] = (dom.x_test, dom.y_test)
        n_out[t] = split.n_classes
    return train, test, n_out


def _disjoint(split, n_tasks: int, per_class: int, generator) -> list[torch.Tensor]:
    picks: list[list[torch.Tensor]] = [[] for _ in range(n_tasks)]
    for c in range(split.n_classes):
        idx = torch.nonzero(split.y_train == c).flatten()
        need = per_class * n_tasks
        if len(idx) < need:
            raise ValueError(f"class {c} has {len(idx)} training images, fewer than "
                             f"{need} = {per_class}/class × {n_tasks} tasks")
        idx = idx[torch.randperm(len(idx), generator=generator)[:need]]
        for i in range(n_tasks):
            picks[i].append(idx[i * per_class:(i + 1) * per_class])
    return [torch.cat(p) for p in picks]


def _tower(n_in: int, hidden: list[int], n_out: int) -> nn.Sequential:
    h1, h2 = hidden
    return nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(n_in, h1), nn.ReLU()),
                         nn.Sequential(nn.Linear(h1, h2), nn.ReLU()),
                         nn.Linear(h2, n_out))


def _build(method: str, seed: int, n_in: int, hidden: list[int], n_out: dict[str, int]):
    torch.manual_seed(seed)
    towers = {t: _tower(n_in, hidden, k) for t, k in n_out.items()}
    if method.startswith("hard"):
        first = next(iter(towers.values()))
        trunk = nn.Sequential(first[0], first[1])
        return HardSharedTrunk(trunk, {t: tw[2] for t, tw in towers.items()})
    if method == "cross-stitch":
        return CrossStitchNet(towers, channels=list(hidden))
    return TaskTowers(towers)


def _saved_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.safetensors")
        save(model, path)
        return os.path.getsize(path)


def _load(cfg):
    if cfg["dataset"] == "digits":
        return load_digits()
    return load_fashion_mnist(limit_test=cfg["limit_test"])


def _fmt(lam: float) -> str:
    return f"soft λ={lam:g}"


@register_experiment(
    "multitask",
    description="Multi-task sharing with few labels per task (3 label sets of the same images): "
                "single-task vs. hard trunk vs. soft-tied towers (λ sweep) vs. cross-stitch; "
                "accuracy per task, parameters stored.",
    presets={
        "quick": {"dataset": "digits", "tasks": "labels", "shifts": None, "hidden": [64, 32],
                  "labels_per_class": [3], "strengths": [1e-2, 1.0], "steps": 80, "lr": 3e-3,
                  "batch": 32, "limit_test": None},
        "full": {"dataset": "fashion_mnist", "tasks": "labels", "shifts": None,
                 "hidden": [256, 128], "labels_per_class": [5, 50],
                 "strengths": [1e-4, 1e-3, 1e-2, 1e-1], "steps": 300, "lr": 1e-3,
                 "batch": 64, "limit_test": 5000},
    },
    default_seeds={"quick": 1, "full": 3},
)
def run_multitask(ctx):
    cfg = ctx.config
    res = ctx.result()
    split = _load(cfg)
    if cfg["tasks"] == "domains":
        spec, builder = cfg["shifts"], make_domain_tasks
        task_desc = ", ".join(f"{t} ({', '.join(f'{k} {v:g}' for k, v in sh.items()) or 'as is'})"
                              for t, sh in spec.items())
        kind = "the same 10 classes in shifted copies of the images (tying.data.shift_domain)"
    else:
        spec, builder = TASKS[cfg["dataset"]], make_tasks
        task_desc = ", ".join(f"{t} ({max(m) + 1} classes)" for t, m in spec.items())
        kind = "label sets of the same images"
    tasks = list(spec)
    n_in = int(np.prod(split.x_train.shape[1:]))
    hidden, lams, labels = cfg["hidden"], cfg["strengths"], cfg["labels_per_class"]
    methods = (["single-task", "hard (equal)", "hard (uncertainty)"]
               + [_fmt(v) for v in lams] + ["cross-stitch"])
    acc = {(m, n, t): [] for m in methods for n in labels for t in tasks}
    params: dict[str, dict[str, int]] = {}
    jobs = [(s, n, m) for s in ctx.seeds for n in labels for m in methods]
    data_cache = {}
    for seed, n, method in ctx.progress(jobs, "seeds × labels × methods"):
        if (seed, n) not in data_cache:
            data_cache.clear()
            data_cache[(seed, n)] = builder(split, spec, n, seed_everything(seed * 1000 + n))
        train, test, n_out = data_cache[(seed, n)]
        model = _build(method, seed, n_in, hidden, n_out)
        penalty = None
        if method.startswith("soft"):
            lam = lams[[_fmt(v) for v in lams].index(method)]
            penalty = model.soft_tie(include=["0.*", "1.*"], strength=lam, topology="star")
        weighting = "uncertainty" if method == "hard (uncertainty)" else "equal"
        train_multitask(model, train, steps=cfg["steps"], lr=cfg["lr"], batch_size=cfg["batch"],
                        weighting=weighting, penalty=penalty,
                        generator=torch.Generator().manual_seed(seed * 7919 + n))
        if method.startswith("hard"):
            verify(model)          # the trunk is still one set after training
        for t, a in evaluate_multitask(model, test).items():
            acc[(method, n, t)].append(a)
        if method not in params:
            fp = footprint(model)
            params[method] = {"unique": fp.unique_params, "virtual": fp.virtual_params,
                              "file": _saved_bytes(model)}

    mean = {k: float(np.mean(v)) for k, v in acc.items()}

    def avg_values(m, n):        # per-seed average over tasks
        return [float(np.mean([acc[(m, n, t)][i] for t in tasks]))
                for i in range(len(ctx.seeds))]

    rows, avg = [], {}
    for m in methods:
        row = {"method": m}
        for n in labels:
            v = avg_values(m, n)
            avg[(m, n)] = (float(np.mean(v)), float(np.std(v)))
            res.add_metric(f"{m} @ {n}/class: average accuracy", v, "accuracy")
            for t in tasks:
                res.add_metric(f"{m} @ {n}/class: {t}", acc[(m, n, t)], "accuracy")
            row[f"{n}/class"] = f"{avg[(m, n)][0]:.3f} ± {avg[(m, n)][1]:.3f}"
        rows.append(row)
    res.add_table("Average accuracy over the tasks (mean ± std over seeds)", rows)
    for n in labels:
        res.add_table(f"Accuracy per task at {n} labels/class per task (mean over seeds)",
                      [{"method": m, **{t: f"{mean[(m, n, t)]:.3f}" for t in tasks},
                        "average": f"{avg[(m, n)][0]:.3f}"} for m in methods])
    prow = []
    for m in methods:
        p = params[m]
        res.add_metric(f"{m}: unique parameters", [p["unique"]], "params")
        res.add_metric(f"{m}: virtual parameters", [p["virtual"]], "params")
        res.add_metric(f"{m}: checkpoint bytes", [p["file"]], "bytes")
        prow.append({"method": m, "unique params": p["unique"], "virtual params": p["virtual"],
                     "tying.save file (bytes)": p["file"]})
    res.add_table("Parameters (tying.footprint) and checkpoint size (tying.save)", prow)

    # claim 1: with scarce labels, sharing beats single-task (average over tasks)
    scarce = [n for n in labels if n <= 20] or [min(labels)]
    families = {"hard": ["hard (equal)", "hard (uncertainty)"],
                "soft (best λ)": [_fmt(v) for v in lams], "cross-stitch": ["cross-stitch"]}
    verdicts, evidence, gains = [], [], []
    for n in scarce:
        single = avg[("single-task", n)][0]
        parts = []
        for fam, members in families.items():
            best = max(members, key=lambda m, _n=n: avg[(m, _n)][0])
            beats = avg[(best, n)][0] > single
            verdicts.append(beats)
            gains.append(avg[(best, n)][0] - single)
            parts.append(f"{fam} {avg[(best, n)][0]:.3f} ({best})")
        evidence.append(f"{n}/class: single-task {single:.3f}; " + ", ".join(parts))
    res.add_claim(f"With scarce labels (≤ 20 per class per task; {scarce}), every sharing "
                  f"family (hard trunk, best soft tie, cross-stitch) beats single-task training "
                  f"on the accuracy averaged over the {len(tasks)} tasks",
                  all(verdicts), "; ".join(evidence))
    # paired differences: the same seed gives every method the same labelled samples and init
    def paired(m, n):
        return [a - b for a, b in zip(avg_values(m, n), avg_values("single-task", n))]

    best_soft = {n: max((_fmt(v) for v in lams), key=lambda m, _n=n: avg[(m, _n)][0])
                 for n in labels}
    for n in labels:
        for name, m in (("hard (equal)", "hard (equal)"), ("cross-stitch", "cross-stitch"),
                        ("best soft", best_soft[n])):
            res.add_metric(f"{name} - single-task @ {n}/class", paired(m, n), "accuracy")
    for name in ("hard (equal)", "cross-stitch"):
        diffs = {n: paired(name, n) for n in scarce}
        res.add_claim(f"{name.capitalize()} beats single-task on every seed at every scarce "
                      f"label count (paired: same seed, same labelled samples, same init)",
                      all(d > 0 for v in diffs.values() for d in v),
                      "; ".join(f"{n}/class: " + ", ".join(f"{d:+.4f}" for d in v)
                                for n, v in diffs.items()))
    if len(labels) > 1:
        lo, hi = min(labels), max(labels)
        g_lo = float(np.mean(paired("hard (equal)", lo)))
        g_hi = float(np.mean(paired("hard (equal)", hi)))
        res.add_claim(f"The gain of hard sharing over single-task is larger when labels are "
                      f"scarcer ({lo}/class vs {hi}/class)", g_lo > g_hi,
                      f"{lo}/class: {g_lo:+.4f}; {hi}/class: {g_hi:+.4f}")
    # claim 2: hard sharing stores fewer parameters; soft ties and cross-stitch do not
    single_p, hard_p = params["single-task"], params["hard (equal)"]
    res.add_claim("Hard sharing reduces the parameters stored: unique parameters (footprint) "
                  "and the tying.save file are smaller than single-task's, while its virtual "
                  "parameters equal single-task's",
                  hard_p["unique"] < single_p["unique"] and hard_p["file"] < single_p["file"]
                  and hard_p["virtual"] == single_p["unique"],
                  f"unique {hard_p['unique']:,} vs {single_p['unique']:,} params "
                  f"({single_p['unique'] / hard_p['unique']:.2f}×), file {hard_p['file']:,} vs "
                  f"{single_p['file']:,} bytes, virtual {hard_p['virtual']:,}; soft ties store "
                  f"{params[_fmt(lams[0])]['unique']:,}, cross-stitch "
                  f"{params['cross-stitch']['unique']:,}")
    _plots(ctx, res, avg, acc, methods, labels, lams, tasks)
    res.notes += [
        f"Data: {split.name}; tasks {task_desc} — {kind}; each task "
        f"has its own disjoint labelled sample of "
        f"labels_per_class images per base class; tested on {len(split.y_test)} test images.",
        f"Tower: {n_in}-{hidden[0]}-{hidden[1]}-head MLP (ReLU); Adam lr {cfg['lr']}, "
        f"{cfg['steps']} steps, batch {cfg['batch']} per task (all of a task's labels when "
        f"fewer). Soft ties: squared L2, star topology (each tower to the mean), reduction "
        f"sum, on stages 0-1 (the heads are free). Cross-stitch: channel-wise units after "
        f"stages 0 and 1, α initialised to 0.9 on the diagonal, same lr as the rest.",
        "The best λ of the soft sweep is selected on the test set (no validation set with "
        "a few labels per class), so 'best soft' is optimistic; every λ is in the metrics.",
    ]
    if cfg["dataset"] != "digits":
        res.notes.append(f"Full preset sized for ≤ ~15 min on a shared 2-core CPU (1 torch "
                         f"thread): {cfg['steps']} steps per model, test set limited to the "
                         f"first {cfg['limit_test']} images.")
    return res


def _plots(ctx, res, avg, acc, methods, labels, lams, tasks):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.8), squeeze=False)
    for ax, n in zip(axes[0], labels):
        y = [avg[(_fmt(v), n)] for v in lams]
        ax.errorbar(lams, [a for a, _ in y], [s for _, s in y], marker="o", capsize=3,
                    label="soft-tied towers")
        for m, style, color in (("single-task", "-", "gray"), ("hard (equal)", "--", "C1"),
                                ("cross-stitch", ":", "C2")):
            ax.axhline(avg[(m, n)][0], linestyle=style, color=color, label=m)
        ax.set_xscale("log")
        ax.set_xlabel("soft-tie strength λ")
        ax.set_title(f"{n} labels/class per task")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy averaged over tasks")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("multitask: accuracy vs. soft-tie strength (mean ± std over seeds)")
    ctx.save_plot(res, fig, "accuracy_vs_strength.png")

    n = min(labels)
    shown = ["single-task", "hard (equal)", "hard (uncertainty)",
             max((_fmt(v) for v in lams), key=lambda m: avg[(m, n)][0]), "cross-stitch"]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.8 / len(shown)
    x = np.arange(len(tasks))
    for i, m in enumerate(shown):
        ax.bar(x + i * width, [np.mean(acc[(m, n, t)]) for t in tasks], width,
               yerr=[np.std(acc[(m, n, t)]) for t in tasks], capsize=2, label=m)
    low = min(float(np.mean(acc[(m, n, t)])) for m in shown for t in tasks)
    ax.set_ylim(bottom=max(0.0, low - 0.1))          # the differences are a few points
    ax.set_xticks(x + 0.4 - width / 2, tasks)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"multitask: accuracy per task at {n} labels/class per task")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    ctx.save_plot(res, fig, "accuracy_per_task.png")
