"""Bytes on disk and in RAM of tied models, as a ratio to their unique state bytes.

For the `memory` experiment's full-size models: `tying.save`, `torch.save(state_dict)` and
`safetensors.torch.save_model` file sizes, and the resident memory a fresh process gains by
loading the model with `tying.load`. Goal: ≤ 1.01× the unique bytes on disk and in RAM.

Run: .venv/bin/python benchmarks/bench_footprint.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import table, write
from tying.experiments.memory import PRESETS, build_model, disk_bytes, loaded_rss_bytes, model_specs
from tying.experiments.runner import seed_everything
from tying.footprint import footprint

GOAL = 1.01


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, kind, kwargs in model_specs(PRESETS["full"]):
            seed_everything(0)
            model = build_model(kind, kwargs)
            fp = footprint(model)
            state = fp.unique_bytes + fp.buffer_bytes
            d = Path(tmp) / label.replace(" ", "_")
            d.mkdir()
            disk = disk_bytes(model, d)
            rss = loaded_rss_bytes(kind, kwargs, d / "m.tying.safetensors")
            rows.append({"model": label, "unique MB": state / 1e6,
                         "virtual MB": (fp.virtual_bytes + fp.buffer_bytes) / 1e6,
                         "tying.save": disk["tying.save"] / state,
                         "torch.save": disk["torch.save"] / state,
                         "save_model": disk["safetensors.save_model"] / state,
                         "RSS loaded": rss / state})
            del model
    print(table(rows))
    tied = [r for r in rows if r["virtual MB"] > r["unique MB"]]
    worst_disk = max(r["tying.save"] for r in tied)
    worst_rss = max(r["RSS loaded"] for r in tied)
    print(f"\nworst tied model: disk {worst_disk:.4f}×, RAM {worst_rss:.4f}× unique bytes "
          f"(goal ≤ {GOAL}×)")
    path = write("bench_footprint", {
        "goal": f"tying.save file and RSS of the loaded model ≤ {GOAL}× unique state bytes",
        "rows": rows, "worst_disk_ratio": worst_disk, "worst_rss_ratio": worst_rss,
        "disk_goal_met": worst_disk <= GOAL, "rss_goal_met": worst_rss <= GOAL,
        "note": "ratios to unique parameter+buffer bytes; RSS measured in a fresh process per "
                "model (meta build, tying.materialize, tying.load) with "
                "MALLOC_MMAP_THRESHOLD_=16384"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
