"""The advantage estimators alone (agents/estimators.py): group baselines on a hand-made rollout."""

from __future__ import annotations

import pytest
import torch
from hand_rollouts import hand_rollout

from agents.agent import Agent, AgentConfig
from agents.estimators import grpo_advantages, monte_carlo_advantages, rloo_advantages
from agents.networks import GridTransformer
from envs.catgrid_vector import CatGridVectorEnv


def _agent(algo: str, **kw) -> Agent:
    venv = CatGridVectorEnv(num_envs=1)
    net = GridTransformer.from_spaces(venv.single_observation_space, venv.single_action_space, d_model=16, n_layer=1)
    return Agent(net, AgentConfig(algo=algo, gamma=1.0, **kw))


@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_group_advantages_by_hand(algo):
    est = _agent(algo, reinforce_return="episode").advantages(hand_rollout())
    adv, ret, mask = est.adv, est.targets, est.mask
    # RLOO: A = 1 - (3+2)/2, B = 3 - (1+2)/2, C = 2 - (1+3)/2; GRPO: (R - 2) / (1 + eps)
    a, b, c = (-1.5, 1.5, 0.0) if algo == "rloo" else (-1 / 1.0001, 1 / 1.0001, 0.0)
    expected_mask = [[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]]
    assert mask.int().tolist() == expected_mask
    assert adv[mask].tolist() == pytest.approx([a, c, a, c, c, b, b])  # row-major order of the mask
    assert not torch.isnan(adv).any()
    assert ret[0, 0] == 1 and ret[3, 0] == 3 and ret[0, 2] == 5


def test_rloo_to_go_per_step_baseline_by_hand():
    est = _agent("rloo", reinforce_return="to_go").advantages(hand_rollout())
    adv, ret, mask = est.adv, est.targets, est.mask
    # reward-to-go by step index: A [1, 1], B [3, 3], C [2, 2, 2] (0 after an end); per step τ:
    # A: 1 - (3+2)/2 twice; B: 3 - (1+2)/2 twice; C: 2 - (1+3)/2 twice, then 2 - (0+0)/2
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]]
    assert adv[mask].tolist() == pytest.approx([-1.5, 0.0, -1.5, 0.0, 2.0, 1.5, 1.5])
    assert ret[1, 1] == 2 and ret[3, 0] == 3  # reward-to-go


def test_group_algos_need_group_ids():
    ro = hand_rollout()
    ro.group = None
    with pytest.raises(ValueError, match="Rollout.group"):
        _agent("rloo").update(ro)


@pytest.mark.parametrize("fn,algo", [(rloo_advantages, "rloo"), (grpo_advantages, "grpo")])
def test_estimators_alone_equal_the_agents_advantages(fn, algo):
    cfg = AgentConfig(algo=algo, gamma=1.0, reinforce_return="episode")
    alone, via_agent = fn(hand_rollout(), cfg), _agent(algo, reinforce_return="episode").advantages(hand_rollout())
    assert torch.equal(alone.adv, via_agent.adv) and torch.equal(alone.mask, via_agent.mask)
    assert alone.stats == {"group/episodes": 4.0, "group/skipped_alone": 1.0}  # E is alone in group 1


def test_monte_carlo_mask_keeps_complete_episodes_only():
    est = monte_carlo_advantages(hand_rollout(), AgentConfig(algo="reinforce", gamma=1.0, reinforce_baseline=False))
    # row 1's episode D and row 3's episode F are unfinished; row 3's first episode began before the rollout
    # but G_t only needs its end; reset steps never count
    assert est.mask.int().tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0], [1, 0, 1, 0], [1, 0, 1, 0]]
    assert est.stats == {}
