"""runners.common.distributed: no-ops in one process; collectives, gradient sums and error agreement on 2 gloo ranks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from runners.common import distributed
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
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="same GPU"):
        distributed.init_distributed("cuda:1")


@dataclass
class Log:
    xs: list = field(default_factory=list)
    tag: str = ""


@pytest.mark.parametrize("module", ["sft", "train_reward"])
def test_single_process_stages_refuse_torchrun(monkeypatch, module):
    import importlib

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="runs in one process"):
        importlib.import_module(f"runners.{module}").main(["--help"])


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
    # whichever rank is reported first (rank 1's error, or rank 0's broken collective), not a TimeoutError
    with pytest.raises(torch.multiprocessing.ProcessRaisedException, match="rank 1 dies|Connection"):
        run_ranks(_crash_on_rank_1, timeout_s=60)


# ------------------------------------------------------------------ data-parallel agent updates
def _rollout_and_net(num_envs: int = 8, steps: int = 24, seed: int = 0):
    """A CatGrid rollout of ``num_envs`` columns from a random small network, and that network's weights."""
    import gymnasium as gym

    from agents.agent import Agent, AgentConfig
    from agents.networks import build_network
    from agents.rollout import RolloutCollector
    from envs.catgrid_vector import CatGridVectorEnv

    torch.manual_seed(seed)
    venv = gym.wrappers.vector.RecordEpisodeStatistics(CatGridVectorEnv(num_envs=num_envs, max_episode_steps=12))
    net = build_network(venv.single_observation_space, venv.single_action_space, d_model=16, n_layer=1, n_head=2)
    ro, _ = RolloutCollector(venv, Agent(net.eval(), AgentConfig()), steps, reward_scale=0.01, seed=seed).collect()
    return ro, {k: v.clone() for k, v in net.state_dict().items()}, (venv.single_observation_space, venv.single_action_space)


def _columns(ro, cols: slice):
    """A copy of env columns ``cols`` of a rollout (what one rank with those envs would have collected)."""
    from dataclasses import fields as dc_fields

    take = lambda x: x if x is None or isinstance(x, (int, float)) else x[:, cols].clone()  # noqa: E731  (kl_coef, group_size)
    return type(ro)(**{f.name: take(getattr(ro, f.name)) for f in dc_fields(ro)})


CASES = {
    # plain SGD without clipping where the test is on the gradient itself (Adam's first steps are
    # nearly sign(g), which would hide a wrongly weighted gradient; clipping would hide its scale)
    # PPO: several epochs of one minibatch, and of 3 shuffled minibatches (rank 0 draws the split for every rank)
    "ppo": dict(algo="ppo", update_epochs=3, num_minibatches=1, learning_rate=0.05, max_grad_norm=1e9, sgd=True),
    "ppo_minibatches": dict(algo="ppo", update_epochs=2, num_minibatches=3, learning_rate=0.05, max_grad_norm=1e9,
                            sgd=True),
    # PPO with Adam, clipping and an early stop at target_kl after the first epoch
    "ppo_target_kl": dict(algo="ppo", update_epochs=4, num_minibatches=1, learning_rate=3e-2, target_kl=1e-3),
    # REINFORCE: one step from gradients accumulated over minibatches; ranks have unequal step counts
    "reinforce": dict(algo="reinforce", num_minibatches=2, learning_rate=0.05, max_grad_norm=1e9, sgd=True),
    # RLOO: groups of 2 (whole blocks on each rank), gradients accumulated over 3 minibatches, constant denominator
    "rloo": dict(algo="rloo", num_minibatches=3, learning_rate=0.05, max_grad_norm=1e9, sgd=True),
    "rloo_episode_token_mean": dict(algo="rloo", num_minibatches=2, learning_rate=0.05, max_grad_norm=1e9, sgd=True,
                                    reinforce_return="episode", loss_aggregation="token_mean"),
    # GRPO: epochs of one minibatch, and of several shuffled minibatches with each loss aggregation
    "grpo": dict(algo="grpo", update_epochs=3, num_minibatches=1, learning_rate=0.05, max_grad_norm=1e9, sgd=True),
    "grpo_minibatches": dict(algo="grpo", update_epochs=2, num_minibatches=3, learning_rate=0.05, max_grad_norm=1e9,
                             sgd=True),
    "grpo_sequence_mean": dict(algo="grpo", update_epochs=2, num_minibatches=2, learning_rate=0.05, max_grad_norm=1e9,
                               sgd=True, loss_aggregation="sequence_mean"),
    "grpo_dr_constant": dict(algo="grpo", update_epochs=2, num_minibatches=3, learning_rate=0.05, max_grad_norm=1e9,
                             sgd=True, loss_aggregation="constant", scale_rewards=False),
}
GROUP_CASES = tuple(case for case in CASES if CASES[case]["algo"] in ("rloo", "grpo"))


def _grouped(ro, k: int = 2):
    """The rollout with groups of k: the e-th episode of each row of block ``i // k``."""
    import copy

    ro = copy.copy(ro)
    N = ro.actions.shape[1]
    ro.group = (torch.cumsum(ro.episode_start.long(), 0) - 1) * (N // k) + torch.arange(N) // k
    ro.group_size = k
    return ro


def _update(config: dict, ro, state, spaces, seed: int = 1):
    from agents.agent import Agent, AgentConfig
    from agents.networks import build_network

    net = build_network(*spaces, d_model=16, n_layer=1, n_head=2)
    net.load_state_dict(state)
    config = dict(config)
    sgd = config.pop("sgd", False)
    agent = Agent(net.eval(), AgentConfig(**config))
    if sgd:
        agent.optimizer = torch.optim.SGD(net.parameters(), lr=config["learning_rate"])
    torch.manual_seed(seed)
    stats = agent.update(ro)
    return {k: v.clone() for k, v in net.state_dict().items()}, stats


def _rank_updates(rank: int, state, spaces, splits: dict) -> dict:
    """``splits``: case -> (agent config, rollout, ((lo, hi) columns of rank 0, of rank 1))."""
    out = {}
    for case, (config, ro, cuts) in splits.items():
        lo, hi = cuts[rank]
        # rank 0 seeded as the single process (it draws the minibatch split for all), rank 1 otherwise
        out[case] = _update(config, _columns(ro, slice(lo, hi)), state, spaces, seed=1 if rank == 0 else 100 + rank)
    return out


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _identical(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


UNEVEN_PPO = dict(algo="ppo", update_epochs=2, num_minibatches=8, learning_rate=3e-3, target_kl=0.5)


@pytest.fixture(scope="module")
def updates():
    """Every case's update on 2 gloo ranks (one spawn), plus the rollouts and starting weights."""
    ro, state, spaces = _rollout_and_net()
    ro.rewards[:, 3:] *= 5.0  # the halves differ in scale: per-rank advantage statistics would be wrong
    # rank 0's episodes never finish in this copy: it has no learnable REINFORCE step at all
    ro_empty = _columns(ro, slice(0, 8))
    ro_empty.terminated[:, :3] = False
    ro_empty.truncated[:, :3] = False
    # uneven halves (3 + 5 columns), so a plain average of the ranks' gradients would be wrong
    splits = {case: (config, ro, ((0, 3), (3, 8))) for case, config in CASES.items() if case not in GROUP_CASES}
    splits |= {case: (CASES[case], _grouped(ro), ((0, 2), (2, 8))) for case in GROUP_CASES}  # whole blocks
    splits["reinforce_empty"] = (CASES["reinforce"], ro_empty, ((0, 3), (3, 8)))
    # rank 0 holds one column (a few chunks), rank 1 seven: rank 0 gets empty PPO minibatches
    splits["uneven"] = (UNEVEN_PPO, ro, ((0, 1), (1, 8)))
    return run_ranks(_rank_updates, args=(state, spaces, splits), timeout_s=240), ro, ro_empty, state, spaces


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_on_two_halves_take_the_step_of_one_process_on_the_whole_batch(updates, case):
    results, ro, _, state, spaces = updates
    single, single_stats = _update(CASES[case], _grouped(ro) if case in GROUP_CASES else ro, state, spaces)
    (w0, s0), (w1, s1) = results[0][case], results[1][case]
    assert _max_diff(single, state) > 1e-3  # the update really moved the weights
    assert _identical(w0, w1), "ranks diverged"
    assert _max_diff(w0, single) < 1e-5, _max_diff(w0, single)
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "explained_variance", "group/episodes"):
        if key in single_stats:
            assert s0[key] == pytest.approx(single_stats[key], rel=1e-4, abs=1e-6), key
            assert s1[key] == s0[key]


def test_a_rank_without_learnable_steps_still_takes_the_global_step(updates):
    results, _, ro_empty, state, spaces = updates
    single, _ = _update(CASES["reinforce"], ro_empty, state, spaces)
    (w0, _), (w1, _) = results[0]["reinforce_empty"], results[1]["reinforce_empty"]
    assert _identical(w0, w1) and _max_diff(w0, single) < 1e-5


def test_uneven_minibatch_counts_do_not_deadlock_and_ranks_stay_identical(updates):
    results, ro, _, state, spaces = updates
    (w0, s0), (w1, s1) = results[0]["uneven"], results[1]["uneven"]
    assert _identical(w0, w1) and _max_diff(w0, state) > 1e-4
    # the minibatches are drawn from the global chunk list, so even this split is the one process's step
    assert _max_diff(w0, _update(UNEVEN_PPO, ro, state, spaces)[0]) < 1e-5
    assert s0 == s1
