"""Launch a worker script under `torchrun --nproc_per_node=2` (gloo, CPU) from a test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(script: str | Path, out_dir: str | Path, *args: str, nproc: int = 2,
                 timeout: float = 240) -> list[dict]:
    """Run ``script`` on ``nproc`` ranks; each rank writes ``out_dir/rank{R}.json``.

    Returns the ranks' JSON documents in rank order; raises AssertionError with the workers'
    output if the launch fails.
    """
    out_dir = Path(out_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script),
           str(out_dir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(nproc)]
