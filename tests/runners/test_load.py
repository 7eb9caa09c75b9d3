"""runners.common.load: one call loads a finished run, like Stable-Baselines3's ``PPO.load``."""

from __future__ import annotations

import numpy as np
import torch

from agents.agent import Agent
from runners import load_agent, train

TINY = ["--total-timesteps", "512", "--num-envs", "8", "--num-steps", "32", "--eval-episodes", "0",
        "--no-progress", "--threads", "1", "--d-model", "32", "--n-layer", "1"]


def test_agent_load_and_predict_like_sb3(tmp_path, one_thread):
    result = train.main(["--log-dir", str(tmp_path), "--run-name", "r", *TINY])
    trained: Agent = result["agent"]
    agent = load_agent(tmp_path / "r", device="cpu")
    for a, b in zip(agent.net.state_dict().values(), trained.net.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    obs = np.array([[0, 0], [1, 2], [3, 4]])
    actions, state = agent.predict(obs, deterministic=True)
    assert state is None and actions.shape == (3,)
    expected = trained.policy_step(obs, np.ones(3, dtype=bool))[0].argmax(-1).cpu().numpy()
    np.testing.assert_array_equal(actions, expected)
    single, _ = agent.predict(obs[1])
    assert isinstance(single, int) and single == expected[1]
    only_left = np.array([False, False, True, False])
    assert agent.predict(obs[1], action_mask=only_left)[0] == 2
