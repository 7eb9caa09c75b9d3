"""runners.distributed: no-ops in one process; collectives, gradient sums and error agreement on 2 gloo ranks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from runners import distributed
from tests.dist_harness import run_ranks


def test_helpers_are_noops_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_distributed("cpu") == distributed.DistInfo()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce(t) is t and t.tolist() == [1.0, 2.0]
    assert distributed.global_sum(1.0, torch.tensor(2.0)).tolist() == [1.0, 2.0]
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_object("x") == "x"
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    distributed.all_reduce_grads([p])
    assert p.grad.tolist() == [3.0, 3.0]
    with pytest.raises(ValueError, match="boom"), distributed.agree_on_errors("test"):
        raise ValueError("boom")
    distributed.NullWriter().add_scalar("x", 1.0, 0)


def test_world_size_without_torchrun_env_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        distributed.init_distributed("cpu")


@dataclass
class Log:
    xs: list = field(default_factory=list)
    tag: str = ""


def _collectives(rank: int) -> dict:
    net = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(net.weight, float(rank))  # ranks differ until the broadcast
    distributed.broadcast_module(net)
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad = torch.full((2,), rank + 1.0)  # both ranks: summed 1 + 2 = 3
    b.grad = torch.ones(2) if rank == 1 else None  # one rank: sum 1, zeros from the other
    distributed.all_reduce_grads([a, b, c])  # c: None everywhere, stays None
    d = torch.nn.Parameter(torch.zeros(1))
    d.grad = torch.tensor([rank + 1.0])
    distributed.all_reduce_grads([d], average=True)
    return {
        "info": distributed.info(), "main": distributed.is_main(),
        "weight": net.weight.detach().clone(),
        "sum": distributed.all_reduce(torch.tensor([rank + 1.0])).item(),
        "max": distributed.all_reduce(torch.tensor([rank + 1.0]), op="max").item(),
        "global_sum": distributed.global_sum(rank, 1.0).tolist(),
        "gathered": distributed.gather_lists(Log(xs=[rank, rank], tag=f"r{rank}")),
        "bcast": distributed.broadcast_object(f"from {rank}"),
        "grads": (a.grad.tolist(), b.grad.tolist(), c.grad, d.grad.tolist()),
    }


def test_collectives_on_two_ranks():
    r0, r1 = run_ranks(_collectives)
    assert r0["info"].world_size == r1["info"].world_size == 2 and (r0["info"].rank, r1["info"].rank) == (0, 1)
    assert r0["info"].backend == "gloo" and r0["main"] and not r1["main"]
    assert torch.equal(r0["weight"], torch.zeros(2, 3)) and torch.equal(r1["weight"], r0["weight"])
    for r in (r0, r1):
        assert r["sum"] == 3.0 and r["max"] == 2.0 and r["global_sum"] == [1.0, 2.0]
        assert r["gathered"].xs == [0, 0, 1, 1] and r["bcast"] == "from 0"
        assert r["grads"] == ([3.0, 3.0], [1.0, 1.0], None, [1.5])
    assert r0["gathered"].tag == "r0" and r1["gathered"].tag == "r1"  # non-list fields stay local


def _fail_on_rank_1(rank: int) -> str:
    try:
        with distributed.agree_on_errors("rollout"):
            if rank == 1:
                raise ValueError("bad reward on rank 1")
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return "no error"


def test_error_on_one_rank_stops_every_rank():
    r0, r1 = run_ranks(_fail_on_rank_1, timeout_s=60)
    assert r1 == "ValueError: bad reward on rank 1"
    assert r0.startswith("PeerFailure: rank 1 failed during rollout"), r0


def _crash_on_rank_1(rank: int) -> None:
    if rank == 1:
        raise ValueError("rank 1 dies outside any sync point")
    distributed.all_reduce(torch.ones(1))  # would wait for rank 1 forever without teardown


def test_a_rank_that_dies_ends_the_job_not_a_hang():
    with pytest.raises(Exception, match="rank 1 dies"):
        run_ranks(_crash_on_rank_1, timeout_s=60)
