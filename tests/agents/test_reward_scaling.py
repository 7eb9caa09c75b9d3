"""agents.reward_scaling: TRL's whiten_rewards and clipping of the learning rewards, against hand numbers, and
the update learning from the scaled rewards."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hand_rollouts import hand_rollout

from agents import agent as agent_module
from agents.agent import Agent, AgentConfig
from agents.networks import GridTransformer
from agents.reward_scaling import whiten_and_clip


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
