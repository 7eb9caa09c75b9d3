"""Data-parallel plumbing on ``torch.distributed``, launched by ``torchrun``.

    torchrun --nproc-per-node 2 -m runners.train --env CatGrid-v0 --num-envs 32

``torchrun`` starts one process per rank and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init_distributed` joins the process group when
``WORLD_SIZE > 1`` (backend ``nccl`` when the run's device is CUDA, ``gloo`` on CPU, each rank
on GPU ``LOCAL_RANK``); without torchrun it does nothing and every helper below is a no-op,
so one process runs exactly the single-process code.

Data parallelism as the agent uses it: every rank collects its own rollouts and computes the
mean loss of its share of each minibatch; :func:`all_reduce_grads` then replaces each rank's
gradient by the mean over ranks weighted by their numbers of steps ``Σ_r n_r g_r / Σ_r n_r``
(the gradient of the mean loss over the global minibatch) before clipping and the optimizer
step. All ranks start from rank 0's weights
(:func:`broadcast_module`), take identical steps and so keep identical weights. This is what
``DistributedDataParallel`` does, done explicitly because the networks are called through
``act``/``evaluate`` rather than ``forward``, and because ranks may hold different numbers
of learnable steps.

Failure handling: a rank that raises inside :func:`agree_on_errors` tells the others at the
same sync point (an all-reduced flag), so every rank stops with an error instead of waiting
forever; a rank that dies elsewhere is torn down by ``torchrun`` (and any collective that
still waits gives up after the process-group ``timeout``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from agents import parallel
from agents.parallel import (  # noqa: F401  (re-exported: the runners' one module for distributed work)
    all_reduce,
    all_reduce_grads,
    global_sum,
    is_distributed,
    rank,
    world_size,
)

DEFAULT_TIMEOUT_S = 1800.0
_timeout_s = DEFAULT_TIMEOUT_S  # of the process group joined (named in timeout errors)

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None


class PeerFailure(RuntimeError):
    """Another rank failed; this one stops too (the other rank's traceback has the cause)."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (torchrun sets it)") from None


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one rank that writes logs and files."""
    return rank() == 0


def info() -> DistInfo:
    """This process's place in the job (the defaults outside a process group)."""
    if not is_distributed():
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())


def init_distributed(device: str | torch.device = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Join the ``torchrun`` process group if ``WORLD_SIZE > 1``; idempotent.

    ``device`` is the run's device: ``"auto"``/``"cuda"`` on a CUDA machine selects NCCL and
    pins this process to GPU ``LOCAL_RANK`` (so plain ``"cuda"`` means that GPU); anything
    else uses gloo. ``timeout_s`` bounds how long a collective waits for a missing rank.
    """
    if is_distributed():
        return info()
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world} but {', '.join(missing)} is not set: launch with "
            "`torchrun --nproc-per-node N -m runners.train ...` (or unset WORLD_SIZE for one process)"
        )
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    local_rank = _env_int("LOCAL_RANK", 0)
    wants_cuda = str(device) == "auto" or torch.device(device).type == "cuda"
    if wants_cuda and str(device) != "auto" and torch.device(device).index is not None:
        raise ValueError(f"device {device!r} would put every rank on the same GPU; use 'cuda' or 'auto' "
                         "(torchrun gives each rank GPU LOCAL_RANK)")
    if wants_cuda and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                "use --nproc-per-node <= the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
        backend = "nccl"
        parallel.set_comm_device(torch.device("cuda", local_rank))
    else:
        backend = "gloo"
        parallel.set_comm_device(torch.device("cpu"))
    global _timeout_s
    _timeout_s = timeout_s
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return info()


def check_device(device: str, flag: str = "--device") -> None:
    """ValueError naming ``flag`` when ``device`` names no device of this machine ("auto" always works)."""
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{flag} {device!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if dev.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise ValueError(f"{flag} {device}: CUDA is not available on this machine (torch {torch.__version__}, "
                         f"torch.cuda.is_available() is False); use {flag} auto or {flag} cpu")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def check_devices(**devices: str | None) -> None:
    """:func:`check_device` of each given option (``ref_device="cuda:1"`` is named ``--ref-device``; None: unset)."""
    for name, device in devices.items():
        if device is not None:
            check_device(device, "--" + name.replace("_", "-"))


def require_single_process(command: str) -> None:
    """RuntimeError if launched by torchrun with several processes: ``command`` is not data-parallel."""
    if _env_int("WORLD_SIZE", 1) > 1:
        raise RuntimeError(
            f"{command} runs in one process; under torchrun with WORLD_SIZE={os.environ['WORLD_SIZE']} every rank "
            f"would train and write the same output. Run `python -m {command} ...` (runners.rlhf runs this stage "
            "on rank 0 when it is launched by torchrun)."
        )


def shutdown() -> None:
    """Leave the process group (call once at the end of a run; no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (identical starting weights)."""
    if not is_distributed():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=src)


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s (picklable) ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    with waiting_for_peers(f"for rank {src}'s broadcast"):
        dist.broadcast_object_list(box, src=src, device=parallel.comm_device())
    return box[0]


def all_gather_objects(obj: T) -> list[T]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_lists(obj: T) -> T:
    """A dataclass whose list fields hold every rank's entries, concatenated in rank order."""
    if not is_distributed():
        return obj
    if not is_dataclass(obj):
        raise TypeError(f"gather_lists expects a dataclass of lists, got {type(obj).__name__}")
    parts = all_gather_objects(obj)
    merged = {f.name: [x for p in parts for x in getattr(p, f.name)]
              for f in fields(obj) if isinstance(getattr(obj, f.name), list)}
    return replace(obj, **merged)


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any rank (a decision all ranks must share)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([float(bool(flag))], device=parallel.comm_device())
    with waiting_for_peers("deciding whether to stop"):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


@contextmanager
def waiting_for_peers(where: str, timeouts_only: bool = False) -> Iterator[None]:
    """A collective that gives up waiting (the process-group timeout) raises :class:`PeerFailure` naming this
    rank, where it waited and ``--dist-timeout``, instead of the backend's bare "Timed out waiting ...ms".
    ``timeouts_only``: for a block that does more than collectives (the agent's update and its gradient
    all-reduce), only a backend error or a "timed out" message is converted; other errors pass unchanged."""
    try:
        yield
    except RuntimeError as e:  # DistBackendError included: gloo/NCCL gave up waiting
        timeout = isinstance(e, dist.DistBackendError) or "timed out" in str(e).lower()
        if not is_distributed() or (timeouts_only and not timeout):
            raise
        raise PeerFailure(
            f"rank {dist.get_rank()} waited in vain for the other ranks {where} ({type(e).__name__}: {e}): "
            "another rank is frozen or dead (its output says which). If a step legitimately takes longer, raise "
            f"--dist-timeout (now {_timeout_s:g} s).") from None


@contextmanager
def agree_on_errors(what: str) -> Iterator[None]:
    """Run a block on every rank; if it raises on any rank, raise on every rank.

    The failing rank re-raises its own exception; the others raise :class:`PeerFailure`
    naming the failed rank. One small all-reduce per use; a plain block in one process.
    """
    error: Exception | None = None
    try:
        yield
    except Exception as e:  # noqa: BLE001  (re-raised below, after telling the other ranks)
        if not is_distributed():
            raise
        error = e
    if not is_distributed():
        return
    flag = torch.tensor([dist.get_rank() + 1 if error is not None else 0], device=parallel.comm_device())
    with waiting_for_peers(f"after {what}"):
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    failed = int(flag.item()) - 1
    if error is not None:
        raise error
    if failed >= 0:
        raise PeerFailure(f"rank {failed} failed during {what}; rank {dist.get_rank()} stops too "
                          f"(the error and its traceback are in rank {failed}'s output)")


class NullWriter:
    """Stands in for ``SummaryWriter`` on ranks other than 0: every method does nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
