"""`Result`: what every experiment returns, and its two renderings (results.json, report.md)."""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes

__all__ = ["Claim", "Metric", "Result", "atomic_write_text"]


@dataclass
class Metric:
    """One measured quantity over seeds (or repeats): mean ± std (population std, ddof=0)."""

    mean: float
    std: float
    values: list[float]
    unit: str = ""

    @classmethod
    def of(cls, values, unit: str = "") -> Metric:
        vals = [float(v) for v in np.atleast_1d(np.asarray(values, dtype=float))]
        if not vals:
            raise ValueError("a metric needs at least one value")
        return cls(float(np.mean(vals)), float(np.std(vals)), vals, unit)

    def format(self, digits: int = 3) -> str:
        if len(self.values) == 1:
            text = f"{self.mean:.{digits}g}"
        else:
            text = f"{self.mean:.{digits}g} ± {self.std:.2g}"
        return f"{text} {self.unit}".rstrip()


@dataclass
class Claim:
    """A seed's statement, whether the measured numbers support it, and the numbers that say so."""

    claim: str
    holds: bool
    evidence: str


@dataclass
class Result:
    """Everything one run of one experiment measured.

    ``tables`` maps a title to rows (a list of dicts with equal keys); ``plots`` are PNG file names
    relative to the run's directory.
    """

    experiment: str
    preset: str
    seeds: list[int]
    config: dict[str, Any]
    description: str = ""
    metrics: dict[str, Metric] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    overrides: dict[str, Any] = field(default_factory=dict)  # settings changed from the preset

    def add_metric(self, name: str, values, unit: str = "") -> Metric:
        metric = Metric.of(values, unit)
        if not all(math.isfinite(v) for v in metric.values):
            raise ValueError(f"metric {name!r} has a non-finite value: {metric.values}")
        self.metrics[name] = metric
        return metric

    def add_claim(self, claim: str, holds: bool, evidence: str) -> Claim:
        c = Claim(claim, bool(holds), evidence)
        self.claims.append(c)
        return c

    def add_table(self, title: str, rows: list[dict[str, Any]]) -> None:
        self.tables[title] = [dict(r) for r in rows]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        data = dict(data)
        data["metrics"] = {k: Metric(**v) for k, v in data.get("metrics", {}).items()}
        data["claims"] = [Claim(**c) for c in data.get("claims", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, path: str | Path) -> Result:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def write(self, out_dir: str | Path) -> Path:
        """Write results.json and report.md into ``out_dir`` (atomically); return the json path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps(self.to_dict(), indent=2,
                                                           default=_json_default) + "\n")
        atomic_write_text(out / "report.md", self.to_markdown())
        return out / "results.json"

    def to_markdown(self) -> str:
        lines = [f"# {self.experiment}", ""]
        if self.description:
            lines += [self.description, ""]
        threads = self.environment.get("torch_threads", 1)
        flag = f" --threads {threads}" if threads != 1 else ""
        lines += [f"Preset `{self.preset}`, seeds {self.seeds}, {self.seconds:.1f} s. "
                  f"Reproduce: `tying run {self.experiment} --preset {self.preset} "
                  f"--seeds {len(self.seeds)}{flag}{_set_flags(self.overrides)}`.", ""]
        if self.claims:
            lines += ["## Claims", "", "| claim | holds | evidence |", "|---|---|---|"]
            for c in self.claims:
                lines.append(f"| {_cell(c.claim)} | {'yes' if c.holds else '**no**'} | "
                             f"{_cell(c.evidence)} |")
            lines.append("")
        if self.metrics:
            lines += ["## Metrics", "", "| metric | value | values |", "|---|---|---|"]
            for name, m in self.metrics.items():
                vals = ", ".join(f"{v:.4g}" for v in m.values)
                lines.append(f"| {name} | {m.format()} | {vals} |")
            lines.append("")
        for title, rows in self.tables.items():
            lines += [f"## {title}", "", markdown_table(rows), ""]
        for plot in self.plots:
            lines += [f"![{plot}]({plot})", ""]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        env = ", ".join(f"{k}: {v}" for k, v in self.environment.items())
        lines += [f"Environment: {env}", ""]
        return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(empty)"
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        out.append("| " + " | ".join(_cell(_fmt(r.get(k, ""))) for k in keys) + " |")
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _json_default(obj: Any):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to results.json")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never a half file."""
    atomic_write_bytes(path, text.encode())


def _set_flags(overrides: dict[str, Any]) -> str:
    """The ``--set KEY=VALUE`` arguments that repeat ``overrides``, shell-quoted."""
    return "".join(f" --set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in overrides.items())
