"""stable-baselines3's PPO learns CatGrid-v0 from the native vector env through envs.interop.sb3 (slow).

Checked exactly: after each rollout the greedy policy (``predict(deterministic=True)`` on every cell) is
evaluated on the MDP's table (value iteration over that one action per state), against ``V*(start)``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401
from envs.catgrid_optimum import value_iteration

pytest.importorskip("stable_baselines3")
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402

from envs.interop.sb3 import SB3VecEnv  # noqa: E402

GAMMA, BUDGET, TARGET = 0.99, 300_000, 0.95


def policy_start_value(P, policy: np.ndarray, start: int) -> float:
    """Exact discounted value of a deterministic ``policy`` (S,) from ``start``: the table restricted to it."""
    only = [[P[s][int(policy[s])]] for s in range(len(P))]
    return float(value_iteration(only, gamma=GAMMA)[0][start])


class GreedyRatio(BaseCallback):
    """Records (env steps, greedy V^π(start) / V*(start)) after every rollout; stops once it reaches TARGET."""

    def __init__(self, base) -> None:
        super().__init__()
        self.base, self.v_star, self.curve = base, base.optimal_start_value(GAMMA), []

    def _on_rollout_end(self) -> None:
        policy, _ = self.model.predict(self.base.tables.xy, deterministic=True)  # (S,) one action per cell
        ratio = policy_start_value(self.base.P, policy, self.base.tables.start) / self.v_star
        self.curve.append((self.num_timesteps, ratio))

    def _on_step(self) -> bool:
        return not self.curve or self.curve[-1][1] < TARGET


@pytest.mark.slow
def test_sb3_ppo_learns_catgrid_through_the_adapter(one_thread):
    venv = gym.make_vec("CatGrid-v0", num_envs=8, vectorization_mode="vector_entry_point", autoreset_mode="SameStep")
    base = venv.unwrapped
    optimal = value_iteration(base.P, gamma=GAMMA)[1]
    assert policy_start_value(base.P, optimal, base.tables.start) == pytest.approx(base.optimal_start_value(GAMMA))
    torch.manual_seed(0)
    model = PPO("MlpPolicy", SB3VecEnv(venv), n_steps=256, seed=0, device="cpu")  # SB3's defaults otherwise
    callback = GreedyRatio(base)
    assert policy_start_value(base.P, model.predict(base.tables.xy, deterministic=True)[0], base.tables.start) \
        < TARGET * callback.v_star  # the untrained policy is not already good
    model.learn(BUDGET, callback=callback)
    steps, ratio = callback.curve[-1]
    assert ratio >= TARGET and steps <= BUDGET, callback.curve
