"""Run under torchrun: FSDP2 (fully_shard, gloo, CPU) on tied models via tying.distributed."""

import json
import sys
from pathlib import Path

import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

sys.path.insert(0, str(Path(__file__).parent))
import common
import tying
from tying.distributed import check_fsdp_units, fully_shard_tied

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
mesh = init_device_mesh("cpu", (world,))
report = {}
for kind in ("gpt", "albert"):
    model = common.build(kind)
    units = [*model.blocks, model.head]
    try:
        check_fsdp_units(model, units)
        split_error = ""
    except tying.TieError as err:
        split_error = str(err)
    wrapped_before = any(type(m).__name__.startswith("FSDP") for m in model.modules())
    plan = fully_shard_tied(model, units, mesh=mesh)
    x, y = common.batch(kind)
    per = common.BATCH // world
    common.train(kind, model, x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per])
    tying.verify(model)
    report[kind] = {"params": common.flat(model), "split_error": split_error,
                    "wrapped_before_check": wrapped_before,
                    "groups": [list(g) for g in plan.groups], "dropped": list(plan.dropped)}
dist.destroy_process_group()
Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(report))
