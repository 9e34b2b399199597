"""Run under torchrun: train tied models with DDP (gloo) and report parameters and tie state."""

import json
import sys
from pathlib import Path

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).parent))
import common
import tying

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
report = {}
for kind in ("gpt", "autoencoder", "albert"):
    model = common.build(kind)
    ddp = DDP(model)
    x, y = common.batch(kind)
    per = common.BATCH // world
    common.train(kind, ddp, x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per])
    tying.verify(model)
    report[kind] = {"params": common.flat(model), "groups": len(tying.ties(model))}
dist.destroy_process_group()
Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(report))
