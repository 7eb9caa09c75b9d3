"""agents.reward_scaling: TRL's whiten_rewards, the running normalisation and clipping of the learning rewards,
against hand numbers (and SB3's RunningMeanStd), and the update learning from the scaled rewards."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hand_rollouts import hand_rollout

from agents import agent as agent_module
from agents.agent import Agent, AgentConfig
from agents.networks import GridTransformer
from agents.reward_scaling import RunningMoments, whiten_and_clip


def test_whiten_keeps_the_mean_and_sets_the_spread_to_one_on_valid_steps():
    r = torch.tensor([[1.0, 3.0], [5.0, 100.0]])  # (T, N)
    valid = torch.tensor([[True, True], [True, False]])
    # valid steps 1, 3, 5: mean 3, unbiased variance (4 + 0 + 4) / 2 = 4, std 2 -> (r - 3) / 2 + 3
    out = whiten_and_clip(r, valid, whiten=True)
    torch.testing.assert_close(out, torch.tensor([[2.0, 3.0], [4.0, 100.0]]), atol=1e-6, rtol=0)
    clipped = whiten_and_clip(r, valid, whiten=True, clip=3.5)
    torch.testing.assert_close(clipped, torch.tensor([[2.0, 3.0], [3.5, 100.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(whiten_and_clip(r, valid, clip=2.0), torch.tensor([[1.0, 2.0], [2.0, 100.0]]))
    assert torch.equal(whiten_and_clip(r, valid), r) and torch.equal(r, torch.tensor([[1.0, 3.0], [5.0, 100.0]]))


@pytest.mark.parametrize("options", [{"whiten_rewards": True}, {"reward_clip": 2.0}])
def test_the_update_learns_from_the_scaled_rewards(options, monkeypatch):
    seen = []
    original = agent_module.FlatBatch.from_rollout
    monkeypatch.setattr(agent_module.FlatBatch, "from_rollout", lambda ro, est: seen.append(ro.rewards) or original(ro, est))
    net = GridTransformer([3, 3], 4, d_model=16, n_layer=1, n_head=2)
    ro = hand_rollout()
    Agent(net, AgentConfig(algo="ppo", **options)).update(dataclasses.replace(ro))
    expected = whiten_and_clip(ro.rewards, ro.valid, options.get("whiten_rewards", False), options.get("reward_clip"))
    assert not torch.equal(expected, ro.rewards) and torch.equal(seen[0], expected)
    with pytest.raises(ValueError, match="reward_clip"):
        AgentConfig(reward_clip=-1.0)


def test_running_moments_merge_rollouts_and_normalise_with_the_running_std():
    m = RunningMoments(count=2.0, mean=2.0, var=1.0)  # as if rewards 1 and 3 were seen
    r = torch.tensor([[5.0, 100.0], [7.0, -3.0]])  # (T, N)
    valid = torch.tensor([[True, False], [True, False]])
    # seen 1, 3, 5, 7: count 4, mean 4, population variance (9 + 1 + 1 + 9) / 4 = 5
    out = m.normalize(r, valid, center=False)
    assert (m.count, m.mean) == (4.0, 4.0) and m.var == pytest.approx(5.0, abs=1e-12)
    s = 5.0 ** 0.5
    torch.testing.assert_close(out, torch.tensor([[5 / s, 100.0], [7 / s, -3.0]]), atol=1e-6, rtol=0)
    m = RunningMoments(count=2.0, mean=2.0, var=1.0)
    centred = m.normalize(r, valid, center=True, clip=0.5)  # (5 - 4) / √5 = 0.447, (7 - 4) / √5 = 1.34 -> 0.5
    torch.testing.assert_close(centred, torch.tensor([[1 / s, 100.0], [0.5, -3.0]]), atol=1e-6, rtol=0)
    m.normalize(r, torch.zeros_like(valid), center=True)  # no valid step: the moments stay
    assert m.state_dict() == {"count": 4.0, "mean": 4.0, "var": m.var}


def test_running_moments_start_as_sb3s_running_mean_std():
    m = RunningMoments()  # count 1e-4, mean 0, var 1: two rewards of 2 give
    m.update(torch.tensor([[2.0, 2.0]]), torch.ones(1, 2, dtype=torch.bool))
    n = 2.0001
    assert m.count == pytest.approx(n, rel=1e-12) and m.mean == pytest.approx(4 / n, rel=1e-12)
    assert m.var == pytest.approx((1e-4 + 4 * 1e-4 * 2 / n) / n, rel=1e-9)
    sb3 = pytest.importorskip("stable_baselines3.common.running_mean_std")
    ref = sb3.RunningMeanStd(shape=())
    theirs, ours = [np.array([2.0, 2.0]), np.array([0.5, -1.0, 4.0])], RunningMoments()
    for batch in theirs:
        ref.update(batch)
        ours.update(torch.tensor(batch)[None], torch.ones(1, len(batch), dtype=torch.bool))
    assert (ours.count, ours.mean, ours.var) == pytest.approx((ref.count, float(ref.mean), float(ref.var)), rel=1e-12)
    with pytest.raises(ValueError, match="count, mean and var"):
        ours.load_state_dict({"count": 1.0})
    with pytest.raises(ValueError, match="finite"):
        ours.load_state_dict({"count": 1.0, "mean": float("nan"), "var": 1.0})


def test_the_update_learns_from_running_normalised_rewards(monkeypatch):
    seen = []
    original = agent_module.FlatBatch.from_rollout
    monkeypatch.setattr(agent_module.FlatBatch, "from_rollout", lambda ro, est: seen.append(ro.rewards) or original(ro, est))
    ro = hand_rollout()  # valid rewards: 1, 3, 2, 5, 7 and zeros (17 valid steps of 20)
    agent = Agent(GridTransformer([3, 3], 4, d_model=16, n_layer=1, n_head=2),
                  AgentConfig(algo="ppo", reward_norm="center", reward_clip=2.0))
    agent.update(dataclasses.replace(ro))
    agent.update(dataclasses.replace(ro))
    expected, twin = [], RunningMoments()
    for _ in range(2):  # the second rollout is normalised with the moments of both
        expected.append(twin.normalize(ro.rewards, ro.valid, center=True, clip=2.0))
    assert twin.count == pytest.approx(34.0001) and agent.reward_moments.state_dict() == twin.state_dict()
    assert torch.equal(seen[0], expected[0]) and torch.equal(seen[1], expected[1])
    assert not torch.equal(expected[0], expected[1]) and expected[0].max() == 2.0  # clipped after normalising
    with pytest.raises(ValueError, match="choose one"):
        AgentConfig(whiten_rewards=True, reward_norm="scale")
    with pytest.raises(ValueError, match="reward_norm must be"):
        AgentConfig(reward_norm="running")  # type: ignore[arg-type]
