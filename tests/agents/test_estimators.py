"""The advantage estimators alone (agents/estimators.py): group baselines on a hand-made rollout."""

from __future__ import annotations

import pytest
import torch
from hand_rollouts import group_rollout, hand_rollout

from agents.agent import Agent, AgentConfig
from agents.estimators import grpo_advantages, monte_carlo_advantages, rloo_advantages
from agents.networks import GridTransformer
from envs.catgrid_vector import CatGridVectorEnv


def _agent(algo: str, **kw) -> Agent:
    venv = CatGridVectorEnv(num_envs=1)
    net = GridTransformer.from_spaces(venv.single_observation_space, venv.single_action_space, d_model=16, n_layer=1)
    return Agent(net, AgentConfig(algo=algo, gamma=1.0, **kw))


LEARNED = [[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0]]  # A, C, E, G of group_rollout
WAITING = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1], [1, 1, 0, 1]]  # B (finished), D and F (running)


@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_group_advantages_by_hand(algo):
    est = _agent(algo, reinforce_return="episode").advantages(group_rollout())
    adv, ret, mask = est.adv, est.targets, est.mask
    # RLOO: A = 1 - 2, C = 2 - 1, E = 5 - 7, G = 7 - 5; GRPO: (R - mean) / (std + eps), std{1,2} = 1/√2, std{5,7} = √2
    a, c, e, g = (-1, 1, -2, 2) if algo == "rloo" else (-0.5 / (2**-0.5 + 1e-4), 0.5 / (2**-0.5 + 1e-4),
                                                       -1 / (2**0.5 + 1e-4), 1 / (2**0.5 + 1e-4))
    assert mask.int().tolist() == LEARNED
    assert adv[mask].tolist() == pytest.approx([a, c, e, g, a, c, e, g, c, e, e, e])  # row-major order of the mask
    assert est.carry is not None and est.carry.int().tolist() == WAITING  # B waits for D: its group is not complete
    assert est.stats == {"group/episodes": 4.0, "group/waiting": 1.0}
    assert ret[0, 0] == 1 and ret[3, 0] == 3 and ret[0, 2] == 5


def test_grpo_without_scale_rewards_is_centred_only():
    est = _agent("grpo", scale_rewards=False).advantages(group_rollout())
    assert est.adv[est.mask].tolist() == pytest.approx([-0.5, 0.5, -1, 1] * 2 + [0.5, -1, -1, -1])


def test_rloo_to_go_per_step_baseline_by_hand():
    est = _agent("rloo", reinforce_return="to_go").advantages(group_rollout())
    adv, ret, mask = est.adv, est.targets, est.mask
    # reward-to-go by step index: A [1, 1], C [2, 2, 2], E [5] * 5, G [7, 7] (0 after an end); per step τ:
    # A: 1 - 2 twice; C: 2 - 1 twice, then 2 - 0; E: 5 - 7 twice, then 5 - 0; G: 7 - 5 twice
    assert mask.int().tolist() == LEARNED
    assert adv[mask].tolist() == pytest.approx([-1, 1, -2, 2, -1, 1, -2, 2, 2, 5, 5, 5])
    assert ret[1, 1] == 2 and ret[3, 0] == 3  # reward-to-go


def test_group_algos_need_group_ids_and_groups_of_two():
    ro = group_rollout()
    ro.group = None
    with pytest.raises(ValueError, match="Rollout.group"):
        _agent("rloo").update(ro)
    ro = group_rollout()
    ro.group_size = 1
    with pytest.raises(ValueError, match="at least 2 episodes"):
        _agent("grpo").update(ro)
    ro = group_rollout()
    ro.group = torch.zeros_like(ro.group)  # ids by row block only: a group with 3 finished episodes
    with pytest.raises(ValueError, match="more than group_size=2"):
        _agent("rloo").advantages(ro)


@pytest.mark.parametrize("fn,algo", [(rloo_advantages, "rloo"), (grpo_advantages, "grpo")])
def test_estimators_alone_equal_the_agents_advantages(fn, algo):
    cfg = AgentConfig(algo=algo, gamma=1.0, reinforce_return="episode")
    alone, via_agent = fn(group_rollout(), cfg), _agent(algo, reinforce_return="episode").advantages(group_rollout())
    assert torch.equal(alone.adv, via_agent.adv) and torch.equal(alone.mask, via_agent.mask)


def test_monte_carlo_mask_keeps_complete_episodes_only():
    est = monte_carlo_advantages(hand_rollout(), AgentConfig(algo="reinforce", gamma=1.0, reinforce_baseline=False))
    # row 1's episode D and row 3's episode F are unfinished; row 3's first episode began before the rollout
    # but G_t only needs its end; reset steps never count
    assert est.mask.int().tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0], [1, 0, 1, 0], [1, 0, 1, 0]]
    assert est.stats == {}


def test_rebn_normalises_reward_to_go_over_the_batch_by_hand():
    """hand_rollout plus a reward 1 at t0 of E, γ = 1: G_t of the 14 learned steps (complete episodes, reset steps
    out) is A: 1 1 | B: 3 3 | C: 2 2 2 | E: 6 5 5 5 5 | (row 3's episode begun earlier) 7 7; D and F unfinished."""
    ro = hand_rollout()
    ro.rewards[0, 2] = 1.0  # a dense reward: G_t differs from G_0 inside E
    est = _agent("rebn").advantages(ro)
    learned = [[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0], [1, 0, 1, 0], [1, 0, 1, 0]]
    assert est.mask.int().tolist() == learned
    mean, std = 54 / 14, ((266 - 54**2 / 14) / 13) ** 0.5  # Σ G = 54, Σ G² = 266 over n = 14, Bessel's n - 1
    g = [1, 2, 6, 7, 1, 2, 5, 7, 2, 5, 3, 5, 3, 5]  # row-major order of the mask
    assert est.adv[est.mask].tolist() == pytest.approx([(x - mean) / (std + 1e-8) for x in g])
    assert est.adv[~est.mask].abs().sum() == 0 and est.targets[0, 2] == 6 and est.targets[0, 3] == 7
    # no critic and no second normalisation: norm_adv and the value baseline change nothing
    assert torch.equal(_agent("rebn", norm_adv=False, reinforce_baseline=False).advantages(ro).adv, est.adv)
    assert not _agent("rebn").spec.trains_value(_agent("rebn").config)
