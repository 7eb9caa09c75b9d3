"""Run a function on N CPU ranks (gloo) in spawned processes, as torchrun would, and collect results.

    results = run_ranks(fn, world=2, args=(...,))   # [fn's return value on rank 0, rank 1, ...]

Each rank gets torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), one
torch thread, and joins the process group through :func:`runners.common.distributed.init_distributed`.
``fn(rank, *args)`` must be a module-level function (spawn pickles it by name).
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as tmp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, fn: Callable, args: tuple, world: int, port: int, out_dir: str, timeout_s: float) -> None:
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": "1"})
    import torch

    from runners.common import distributed

    torch.set_num_threads(1)
    distributed.init_distributed("cpu", timeout_s=timeout_s)
    try:
        result = fn(local_rank, *args)
    finally:
        distributed.shutdown()
    Path(out_dir, f"{local_rank}.pkl").write_bytes(pickle.dumps(result))


def run_ranks(fn: Callable, world: int = 2, args: tuple = (), timeout_s: float = 120.0) -> list[Any]:
    """``[fn(0, *args), fn(1, *args), ...]`` computed on ``world`` gloo ranks; raises if a rank
    fails or the job takes longer than ``timeout_s`` (a hang is a failure, not a wait)."""
    with tempfile.TemporaryDirectory() as out_dir:
        ctx = tmp.start_processes(_worker, args=(fn, args, world, free_port(), out_dir, timeout_s / 2),
                                  nprocs=world, join=False, start_method="spawn")
        deadline = time.time() + timeout_s
        while not ctx.join(timeout=1.0):
            if time.time() > deadline:
                for p in ctx.processes:
                    if p.is_alive():
                        p.kill()
                raise TimeoutError(f"ranks still running after {timeout_s:.0f}s (deadlock?)")
        return [pickle.loads(Path(out_dir, f"{r}.pkl").read_bytes()) for r in range(world)]
