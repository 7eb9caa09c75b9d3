"""Collectives the agent's update calls, on ``torch.distributed``; every one is a no-op in one process.

Data parallelism as the agent uses it: every rank collects its own rollouts and computes the
mean loss of its share of each minibatch; :func:`all_reduce_grads` then replaces each rank's
gradient by the mean over ranks weighted by their numbers of steps ``Σ_r n_r g_r / Σ_r n_r``
(the gradient of the mean loss over the global minibatch) before clipping and the optimizer
step. Joining the process group (``torchrun``) is the runners' job
(:func:`runners.common.distributed.init_distributed`), which also sets the device the
collectives communicate on (:func:`set_comm_device`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

BUCKET_NUMEL = 2**24  # elements per gradient all-reduce (64 MB of float32)

_comm_device = torch.device("cpu")


def set_comm_device(device: torch.device) -> None:
    """The device collectives communicate on (CUDA for NCCL, CPU for gloo)."""
    global _comm_device
    _comm_device = device


def comm_device() -> torch.device:
    return _comm_device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    """In-place all-reduce of ``t`` (``op``: sum, max or min); returns ``t``. No-op in one process."""
    if not is_distributed():
        return t
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    dist.all_reduce(t, op=ops[op])
    return t


def broadcast(t: Tensor, src: int = 0) -> Tensor:
    """In-place broadcast of rank ``src``'s ``t`` to every rank; returns ``t``. No-op in one process."""
    if is_distributed():
        dist.broadcast(t, src=src)
    return t


def rank_counts(n: int, device: torch.device) -> Tensor:
    """Every rank's ``n`` in rank order, ``(world_size,)`` int64 on ``device``, in one collective."""
    counts = torch.zeros(world_size(), dtype=torch.int64, device=device)
    counts[rank()] = n
    return all_reduce(counts)


def global_sum(*values: float | Tensor, device: torch.device | None = None) -> Tensor:
    """Sums over all ranks of scalars, in one collective: a float64 tensor ``(len(values),)``
    on ``device`` (default: the communication device). Plain values in one process."""
    device = device or _comm_device
    t = torch.stack([torch.as_tensor(v).to(device=device, dtype=torch.float64).reshape(()) for v in values])
    return all_reduce(t)


def all_reduce_grads(
    params: Iterable[torch.nn.Parameter], weight: float | Tensor | None = None, average: bool = False
) -> None:
    """Combine ``.grad`` over ranks in place, in flat buckets; a no-op in one process.

    - ``weight=None``: the sum of the ranks' gradients (``average=True``: their mean);
    - ``weight=w``: the weighted mean ``Σ_r w_r g_r / Σ_r w_r``. With ``w_r`` the number of
      steps behind rank ``r``'s (mean) loss, this is the gradient of the mean loss over every
      rank's steps, exactly as one process holding all of them would compute it. A rank with
      ``w_r = 0`` (no data for this step) only contributes to the count of calls.

    A parameter whose gradient is ``None`` on every rank stays ``None`` (the optimizer skips
    it, as in one process); one that has a gradient on some ranks only gets the combined one,
    with zeros from the others. Every rank must make the same calls (they are collectives).
    """
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    w = torch.as_tensor(1.0 if weight is None else weight, dtype=torch.float64).to(_comm_device).reshape(1)
    head = torch.cat([torch.tensor([p.grad is not None for p in params], dtype=torch.float64, device=_comm_device), w])
    dist.all_reduce(head)
    total_w = float(head[-1].item())
    if weight is not None and total_w <= 0:
        raise ValueError("all_reduce_grads: the weights of all ranks sum to 0 (no rank has data for this step)")
    live = [p for p, h in zip(params, head[:-1].tolist()) if h > 0]
    if weight is not None:
        pre, post = float(w.item()), 1.0 / total_w
    else:
        pre, post = 1.0, (1.0 / dist.get_world_size() if average else 1.0)
    bucket: list[torch.nn.Parameter] = []

    def flush() -> None:
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in bucket])
        if pre != 1.0:
            flat.mul_(pre)
        dist.all_reduce(flat)
        if post != 1.0:
            flat.mul_(post)
        offset = 0
        for p in bucket:
            g = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        bucket.clear()

    numel = 0
    for p in live:
        if bucket and (numel + p.numel() > BUCKET_NUMEL or p.dtype != bucket[0].dtype or p.device != bucket[0].device):
            flush()
            numel = 0
        bucket.append(p)
        numel += p.numel()
    if bucket:
        flush()
