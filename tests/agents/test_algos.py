"""The algorithm registry (agents/algos.py): one row per algorithm, read by an update loop that names none."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from agents import algos, estimators
from agents.agent import Agent, AgentConfig
from agents.networks import GridTransformer
from agents.rollout import RolloutCollector
from envs.catgrid_vector import CatGridVectorEnv

ROOT = Path(__file__).resolve().parents[2]


def test_every_algo_name_has_one_row_and_the_configs_reuse_the_names():
    assert tuple(algos.ALGOS) == algos.ALGO_NAMES == ("ppo", "reinforce", "rloo", "grpo", "rebn")
    assert AgentConfig(algo="grpo").clipped and AgentConfig(algo="rloo").group_based
    assert not AgentConfig(algo="ppo").monte_carlo and AgentConfig(algo="reinforce").monte_carlo
    with pytest.raises(ValueError, match="algo must be one of"):
        AgentConfig(algo="a2c")  # type: ignore[arg-type]


@pytest.mark.parametrize("module", ["agents/agent.py", "agents/objective.py", "agents/batch.py"])
def test_the_update_path_names_no_algorithm(module):
    """What differs between algorithms is data: no algorithm name appears as a string in the update path."""
    tree = ast.parse((ROOT / module).read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not strings & set(algos.ALGO_NAMES)


def test_a_new_algorithm_is_one_row(monkeypatch):
    """A2C-like: GAE advantages, no clipping, one step per rollout: a row, no new code in the agent."""
    a2c = algos.AlgoSpec(estimators.gae_advantages, clipped=False, trains_value=lambda c: True, normalize="whiten",
                         loss_aggregation="token_mean", monte_carlo=False, group_based=False)
    monkeypatch.setitem(algos.ALGOS, "a2c", a2c)
    torch.manual_seed(0)
    venv = CatGridVectorEnv(num_envs=4, desc=["T.C.M"], slip=0.0, max_episode_steps=10)
    net = GridTransformer.from_spaces(venv.single_observation_space, venv.single_action_space, d_model=16, n_layer=1)
    agent = Agent(net, AgentConfig(algo="a2c", learning_rate=1e-3, update_epochs=3))  # type: ignore[arg-type]
    before = [p.clone() for p in net.parameters()]
    stats = RolloutCollector(venv, agent, num_steps=8, seed=0).collect()[0]
    out = agent.update(stats)
    assert "approx_kl" not in out and "value_loss" in out and "explained_variance" in out  # not clipped, a critic
    assert agent.optimizer.state[next(iter(net.parameters()))]["step"] == 1  # one epoch, one optimizer step
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        algos.ALGOS["ppo"].clipped = False  # type: ignore[misc]
