"""The agent and the rollout collector: autoreset masking, bootstrapping, chunks, learning, checkpoints."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401
from agents.agent import Agent, AgentConfig
from agents.networks import GridTransformer, PolicyValueNet, StepBatch
from agents.rollout import RolloutCollector
from envs.catgrid_vector import CatGridVectorEnv
from runners.common.checkpoint import load_checkpoint, read_state, save_checkpoint
from runners.common.evaluation import evaluate

LEFT, RIGHT = 2, 3


class FixedPolicy(PolicyValueNet):
    """Always picks ``action``; V(obs) = x coordinate (so bootstraps are visible)."""

    def __init__(self, action: int, num_actions: int = 4) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.action, self.num_actions = action, num_actions

    def _out(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.full((obs.shape[0], self.num_actions), -1e9)
        logits[:, self.action] = 0.0
        return logits + self.w, obs[:, 0].float() + self.w

    def act(self, obs, episode_start):
        return self._out(torch.as_tensor(np.asarray(obs)))

    def evaluate(self, batch: StepBatch):
        return self._out(batch.obs)


def collect(action: int, steps: int, **env_kw):
    venv = gym.wrappers.vector.RecordEpisodeStatistics(CatGridVectorEnv(num_envs=1, **env_kw))
    agent = Agent(FixedPolicy(action), AgentConfig())
    return RolloutCollector(venv, agent, steps, seed=0).collect()


def test_rollout_masks_reset_step_after_termination():
    ro, log = collect(RIGHT, 6, desc=["CM"], slip=0.0)
    # every episode is one step: step, reset, step, reset, ...
    assert ro.valid[:, 0].tolist() == [True, False, True, False, True, False]
    assert ro.episode_start[:, 0].tolist() == [True, False, True, False, True, False]
    assert ro.terminated[:, 0].tolist() == [True, False, True, False, True, False]
    assert ro.rewards[:, 0].tolist() == pytest.approx([100.0, 0.0] * 3)
    assert log.returns == [100.0] * 3 and log.lengths == [1] * 3


def test_rollout_truncation_value_is_v_of_final_obs():
    # the cat walks right along C . . and is truncated after 2 steps at x = 2
    ro, _ = collect(RIGHT, 4, desc=["C..M"], slip=0.0, max_episode_steps=2)
    assert ro.truncated[:, 0].tolist() == [False, True, False, False]
    assert ro.valid[:, 0].tolist() == [True, True, False, True]
    # values[t] = V(o_t) = x ; o_2 is the true final obs (x = 2), o_3 the reset obs (x = 0)
    assert ro.values[:, 0].tolist() == pytest.approx([0.0, 1.0, 2.0, 0.0, 1.0])


def test_ppo_learns_short_corridor_and_greedy_eval():
    torch.manual_seed(0)
    venv = CatGridVectorEnv(num_envs=8, desc=["B.C.M"], slip=0.0, max_episode_steps=20)
    net = GridTransformer.from_spaces(venv.single_observation_space, venv.single_action_space, d_model=32, n_layer=1)
    agent = Agent(net, AgentConfig(learning_rate=3e-3, anneal_lr=False), total_updates=30)
    collector = RolloutCollector(venv, agent, 32, reward_scale=0.01, seed=0)
    for _ in range(30):
        agent.update(collector.collect()[0])
    res = evaluate(agent, CatGridVectorEnv(num_envs=4, desc=["B.C.M"], slip=0.0, max_episode_steps=20),
                   episodes=8, gamma=0.99, greedy=True, seed=1)
    assert res["success_rate"] == 1.0
    assert res["discounted_return"] == pytest.approx(100 * 0.99, rel=1e-6)  # two steps right


def test_sampled_evaluation_with_a_seed_repeats_and_leaves_the_callers_rng_alone():
    venv = CatGridVectorEnv(num_envs=4, max_episode_steps=30)  # untrained policy: sampled episodes vary a lot
    torch.manual_seed(0)
    agent = Agent(GridTransformer.from_spaces(venv.single_observation_space, venv.single_action_space), AgentConfig())
    runs = []
    for _ in range(2):
        torch.rand(5)  # the caller's stream moves on between the two evaluations
        state = torch.get_rng_state()
        runs.append(evaluate(agent, CatGridVectorEnv(num_envs=4, max_episode_steps=30), episodes=16, gamma=0.99,
                             greedy=False, seed=3))
        assert torch.equal(torch.get_rng_state(), state)
    assert runs[0] == runs[1] and runs[0]["length"] > 1


def test_reinforce_variants_learn_corridor():
    for ret, baseline in (("episode", False), ("to_go", False), ("to_go", True)):
        torch.manual_seed(0)
        venv = CatGridVectorEnv(num_envs=8, desc=["T.C.M"], slip=0.0, max_episode_steps=10)
        net = GridTransformer.from_spaces(venv.single_observation_space, venv.single_action_space, d_model=32, n_layer=1)
        cfg = AgentConfig(algo="reinforce", learning_rate=3e-3, num_minibatches=2,
                          reinforce_return=ret, reinforce_baseline=baseline, anneal_lr=False)
        agent = Agent(net, cfg)
        collector = RolloutCollector(venv, agent, 32, reward_scale=0.01, seed=0)
        for _ in range(40):
            agent.update(collector.collect()[0])
        res = evaluate(agent, CatGridVectorEnv(num_envs=2, desc=["T.C.M"], slip=0.0, max_episode_steps=10),
                       episodes=4, gamma=0.99, greedy=True, seed=1)
        assert res["success_rate"] == 1.0, (ret, baseline)


def test_checkpoint_round_trip(tmp_path):
    venv = CatGridVectorEnv(num_envs=2)
    make = lambda: GridTransformer.from_spaces(venv.single_observation_space, venv.single_action_space)  # noqa: E731
    agent = Agent(make(), AgentConfig())
    collector = RolloutCollector(venv, agent, 16, reward_scale=0.01, seed=0)
    agent.update(collector.collect()[0])
    save_checkpoint(tmp_path / "ckpt", agent, {"hello": 1}, global_step=32)
    other = Agent(make(), AgentConfig())
    state = load_checkpoint(tmp_path / "ckpt", other)
    obs = np.array([[0, 0], [3, 2]])
    assert torch.equal(agent.net.act(obs, None)[0], other.net.act(obs, None)[0])
    assert state["global_step"] == 32 and other.num_updates == 1 and state["config"] == {"hello": 1}
    assert not any(p.name.startswith(".ckpt") for p in tmp_path.iterdir())  # no temp dirs left
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        read_state(tmp_path)


def test_bad_agent_config_errors():
    with pytest.raises(ValueError, match="algo must be"):
        AgentConfig(algo="a2c")
    with pytest.raises(ValueError, match="gamma must be"):
        AgentConfig(gamma=1.5)
    with pytest.raises(TypeError, match="Discrete action space"):
        GridTransformer.from_spaces(gym.spaces.Discrete(3), gym.spaces.Box(0, 1, (2,)))
