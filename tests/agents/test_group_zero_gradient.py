"""At the optimum of the toy of ``group_toy.py`` (p* = 1/4, true gradient 0) the mean RLOO / Dr. GRPO update,
collected in rollouts that cut episodes and groups, is 0: groups are fixed before the returns (the e-th episode of
each row of a block) and learned once complete, so which episodes are learned does not depend on the actions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from group_toy import OPTIMUM

from agents.agent import Agent, AgentConfig
from agents.config import Rollout
from agents.networks import GridTransformer
from envs.catgrid_vector import CatGridVectorEnv


class ToyRows:
    """N rows of the toy, autoresetting on the next step (a reset step after every end)."""

    def __init__(self, n: int, k: int, seed: int) -> None:
        self.n, self.k, self.rng = n, k, np.random.default_rng(seed)
        self.phase = np.zeros(n, dtype=int)  # 0: first decision, 1: second decision, 2: reset step
        self.episode = np.zeros(n, dtype=int)
        self.start = np.ones(n, dtype=bool)

    def rollout(self, T: int, p: float) -> Rollout:
        n = self.n
        cols = {k: np.zeros((T, n), dtype=d) for k, d in (("a", int), ("r", float), ("term", bool), ("valid", bool),
                                                            ("start", bool), ("group", int))}
        for t in range(T):
            x = (self.rng.random(n) < p).astype(int)
            coin = self.rng.random(n) < 0.5
            cols["a"][t], cols["valid"][t], cols["start"][t] = x, self.phase != 2, self.start
            cols["group"][t] = self.episode * (n // self.k) + np.arange(n) // self.k
            end_short = (self.phase == 0) & (x == 0)
            end_long = self.phase == 1
            cols["r"][t] = np.where(end_short, coin, 0.0) + np.where(end_long, 1 - x, 0.0)
            cols["term"][t] = end_short | end_long
            reset = self.phase == 2
            self.episode += reset
            self.start = reset
            self.phase = np.where(cols["term"][t], 2, np.where(reset, 0, np.where(self.phase == 0, 1, self.phase)))
        a = torch.as_tensor(cols["a"])
        return Rollout(obs=torch.zeros(T, n, 1, dtype=torch.long), actions=a,
                       logprobs=torch.where(a == 1, np.log(p), np.log(1 - p)).float(), values=torch.zeros(T + 1, n),
                       rewards=torch.as_tensor(cols["r"]).float(), terminated=torch.as_tensor(cols["term"]),
                       truncated=torch.zeros(T, n, dtype=torch.bool), episode_start=torch.as_tensor(cols["start"]),
                       valid=torch.as_tensor(cols["valid"]), group=torch.as_tensor(cols["group"]), group_size=self.k)


@pytest.mark.parametrize("T", [2, 9])
@pytest.mark.parametrize("algo,kw", [("rloo", {}), ("grpo", {"scale_rewards": False, "loss_aggregation": "constant"})])
def test_mean_update_is_zero_at_the_optimum(algo, kw, T):
    venv = CatGridVectorEnv(num_envs=1)
    net = GridTransformer.from_spaces(venv.single_observation_space, venv.single_action_space, d_model=8, n_layer=1)
    agent = Agent(net, AgentConfig(algo=algo, gamma=1.0, **kw))
    rows, n, p = ToyRows(256, 4, seed=T), 256, OPTIMUM
    updates = []
    for _ in range(600 // T):
        ro, est = agent._learnable(rows.rollout(T, p))
        m = est.mask
        updates.append(float(((ro.actions[m] - p) * est.adv[m]).sum()) / (T * n))  # dθ of the constant denominator
    u = np.asarray(updates)
    se = u.std() / np.sqrt(u.size)
    assert abs(u.mean()) < 3.5 * se and se < 2e-3, (u.mean(), se)
