"""The one-pass reference (``ref_mode="one_pass"``) gives the learner the per-step mode's numbers.

Same seeds, same tokens: per-token rewards, ``ref_logprobs`` (``kl_mode="loss"``), the logged KL and shaped
returns and one update agree to 1e-5 between the two modes, with episodes that cross rollout boundaries, rows
that end at different steps (EOS) and EOS masked before ``min_new_tokens``; each mode is bit-reproducible.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401
from agents.agent import Agent, AgentConfig
from agents.networks import CausalLMPolicy
from agents.rollout import RolloutCollector
from envs.imdb import load_imdb

pytestmark = pytest.mark.usefixtures("one_thread")
BETA = 0.3


def char_score(texts: list[str]) -> list[float]:
    return [t.count("e") / 10.0 for t in texts]


@pytest.fixture(scope="module")
def texts(imdb_dir) -> list[str]:
    return [r["text"] for r in load_imdb("train", source=imdb_dir, limit=200, seed=0)]


@pytest.fixture(scope="module")
def policy_lm(tiny_lm):
    """A perturbed copy of the reference (log π_θ ≠ log π_ref), biased towards EOS so rows end apart."""
    out = copy.deepcopy(tiny_lm)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return out


def run(tiny_lm, tiny_tokenizer, texts, policy_lm, ref_mode: str, kl_mode: str = "reward", rollouts: int = 3,
        update: bool = False):
    """``rollouts`` rollouts of 5 rows x 7 steps (episodes of 2..5 tokens cross the rollout ends), then one update."""
    torch.manual_seed(0)
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=5, vectorization_mode="vector_entry_point",
                        model=copy.deepcopy(tiny_lm), tokenizer=tiny_tokenizer, reward_model=char_score,
                        dataset=texts, max_new_tokens=5, min_new_tokens=2, prompt_min_len=2, prompt_max_len=4,
                        kl_coef=BETA, device="cpu", ref_mode=ref_mode)
    venv = gym.wrappers.vector.RecordEpisodeStatistics(venv)
    net = CausalLMPolicy(copy.deepcopy(policy_lm))
    eos = tiny_tokenizer.eos_token_id
    head = net.policy_head
    biased = torch.nn.Linear(head.in_features, head.out_features)
    biased.weight = head.weight
    with torch.no_grad():
        biased.bias.zero_()
        biased.bias[eos] = 3.0
    net.policy_head = biased
    config = AgentConfig(gamma=1.0, kl_mode=kl_mode, learning_rate=1e-4, num_minibatches=2, update_epochs=1)
    agent = Agent(net, config)
    collector = RolloutCollector(venv, agent, 7, seed=0)
    out = [collector.collect() for _ in range(rollouts)]
    before = [p.detach().clone() for p in agent.net.parameters()]
    stats = agent.update(out[-1][0]) if update else None
    return out, agent, stats, (before, collector)


@pytest.mark.parametrize("kl_mode", ["reward", "loss"])
def test_one_pass_learning_reward_equals_per_step(tiny_lm, tiny_tokenizer, texts, policy_lm, kl_mode):
    per_step, _, _, _ = run(tiny_lm, tiny_tokenizer, texts, policy_lm, "per_step", kl_mode)
    one_pass, _, _, (_, collector) = run(tiny_lm, tiny_tokenizer, texts, policy_lm, "one_pass", kl_mode)
    ended_mid = 0
    for (ro_a, log_a), (ro_b, log_b) in zip(per_step, one_pass):
        assert torch.equal(ro_a.actions, ro_b.actions) and torch.equal(ro_a.valid, ro_b.valid)
        ended_mid += int((ro_a.valid[-1] & ~ro_a.terminated[-1]).sum())  # episodes crossing the rollout end
        torch.testing.assert_close(ro_b.rewards, ro_a.rewards, atol=1e-5, rtol=0)
        if kl_mode == "loss":
            assert ro_a.ref_logprobs is not None and ro_b.ref_logprobs is not None
            assert ro_a.ref_logprobs.abs().max() > 0.5  # real log-probs, not zeros
            torch.testing.assert_close(ro_b.ref_logprobs, ro_a.ref_logprobs, atol=1e-5, rtol=0)
        else:
            assert ro_a.ref_logprobs is None and ro_b.ref_logprobs is None
        assert log_b.scores == log_a.scores and len(log_a.kls) == len(log_b.kls) >= 3
        np.testing.assert_allclose(log_b.kls, log_a.kls, atol=1e-5)
        np.testing.assert_allclose(log_b.shaped_returns, log_a.shaped_returns, atol=1e-5)
    assert ended_mid >= 3  # the flush of running episodes at the rollout end was exercised
    counts = collector.envs.unwrapped.pass_counts()
    assert counts["reference_decode"] == 0 and counts["reference_prefill"] == 0
    assert counts["reference_teacher_forced"] >= 1


def test_one_update_equals_per_step_and_each_mode_is_bit_reproducible(tiny_lm, tiny_tokenizer, texts, policy_lm):
    _, agent_a, stats_a, _ = run(tiny_lm, tiny_tokenizer, texts, policy_lm, "per_step", rollouts=2, update=True)
    (out_b, agent_b, stats_b, (before, _)), (out_c, agent_c, _, _) = (
        run(tiny_lm, tiny_tokenizer, texts, policy_lm, "one_pass", rollouts=2, update=True) for _ in range(2))
    for key in ("policy_loss", "value_loss"):
        assert stats_b[key] == pytest.approx(stats_a[key], abs=1e-5)
    moved = 0.0
    for pa, pb, pc, p0 in zip(agent_a.net.parameters(), agent_b.net.parameters(), agent_c.net.parameters(), before):
        torch.testing.assert_close(pb, pa, atol=1e-5, rtol=0)
        assert torch.equal(pb, pc)  # the same command twice: the same weights, bit for bit
        moved = max(moved, float((pb.detach() - p0).abs().max()))
    assert moved > 1e-5  # the update did move the policy
    for (ro_b, _), (ro_c, _) in zip(out_b, out_c):
        assert torch.equal(ro_b.rewards, ro_c.rewards)
