"""The complete KL reward for agents that are not this project's: a custom loop gets, per token, exactly the
reward the project's rollout collector learns from (envs.interop.kl_reward)."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from env_helpers import real_tokens

import envs  # noqa: F401
from agents import Agent, AgentConfig, RolloutCollector
from agents.networks import CausalLMPolicy
from envs.interop import CompleteKLReward, CompleteKLRewardVector, LMPolicyKLReward

BETA = 0.3


@pytest.fixture
def text_kw(kw) -> dict:
    return {**kw, "max_new_tokens": 5, "min_new_tokens": 2, "prompt_min_len": 2, "prompt_max_len": 4,
            "kl_coef": BETA}


def perturbed(model: torch.nn.Module, eos: int, scale: float = 0.05) -> torch.nn.Module:
    """A copy whose weights differ from the reference's (log π_θ ≠ log π_ref), with a head biased toward EOS so
    that masking EOS before ``min_new_tokens`` changes log π_θ clearly and episodes end at different lengths."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
        head = out.get_output_embeddings()
        biased = torch.nn.Linear(head.in_features, head.out_features)
        biased.weight = head.weight
        biased.bias.zero_()
        biased.bias[eos] = 4.0
    out.set_output_embeddings(biased)
    return out


def collected(text_kw: dict, num_envs: int, num_steps: int = 14):
    """One rollout of the project's collector (KL-shaped learning rewards) and the policy it sampled from."""
    torch.manual_seed(0)
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", **text_kw)
    agent = Agent(CausalLMPolicy(perturbed(text_kw["model"], text_kw["tokenizer"].eos_token_id)), AgentConfig(gamma=1.0))
    venv = gym.wrappers.vector.RecordEpisodeStatistics(venv)
    ro, _ = RolloutCollector(venv, agent, num_steps, seed=0, full_obs=True).collect()  # replay reads every step
    assert ro.terminated.sum() >= 2 and (~ro.valid).sum() >= 1  # episodes ended and restarted inside the rollout
    return ro, agent.net.lm


def replay(env: gym.Env, ro, with_logprob: bool) -> list[tuple[float, float]]:
    """Step the single env with the collector's actions (and its sampling log-probs): (custom, collector) rewards."""
    obs, _ = env.reset(seed=0)
    pairs = []
    for t in range(ro.actions.shape[0]):
        if not ro.valid[t, 0]:  # the collector's reset step (reward 0): a custom loop calls reset()
            assert float(ro.rewards[t, 0]) == 0.0
            obs, _ = env.reset()
            continue
        ids, mask = ro.obs["input_ids"][t, 0].numpy(), ro.obs["attention_mask"][t, 0].numpy()
        assert real_tokens(obs) == ids[mask == 1].tolist()  # the same episode, token for token
        extra = {"logprob": ro.logprobs[t, 0]} if with_logprob else {}
        obs, reward, *_ = env.step(int(ro.actions[t, 0]), **extra)
        pairs.append((reward, float(ro.rewards[t, 0])))
    return pairs


def test_custom_loop_gets_the_collectors_per_token_reward(text_kw):
    ro, policy = collected(text_kw, num_envs=1)
    env = CompleteKLReward(gym.make("TextGen-IMDB-v0", **text_kw))
    custom, ours = np.array(replay(env, ro, with_logprob=True)).T
    np.testing.assert_allclose(custom, ours, atol=2e-5)
    # the env's half alone is not the collector's reward (the KL term is really added)
    bare = np.array(replay(gym.make("TextGen-IMDB-v0", **text_kw), ro, with_logprob=False))[:, 0]
    assert np.abs(bare - ours).max() > 1e-2
    # the LM-policy wrapper computes log π_θ itself (own KV cache, EOS masked before min_new_tokens)
    lm_env = LMPolicyKLReward(gym.make("TextGen-IMDB-v0", **text_kw), policy)
    custom, ours = np.array(replay(lm_env, ro, with_logprob=False)).T
    np.testing.assert_allclose(custom, ours, atol=2e-5)


def test_vector_wrapper_matches_the_collector_on_every_row(text_kw):
    ro, _ = collected(text_kw, num_envs=3, num_steps=9)
    venv = CompleteKLRewardVector(gym.make_vec("TextGen-IMDB-v0", num_envs=3,
                                               vectorization_mode="vector_entry_point", **text_kw))
    venv.reset(seed=0)
    for t in range(ro.actions.shape[0]):
        _, reward, _, _, info = venv.step(ro.actions[t].numpy(), logprobs=ro.logprobs[t])
        np.testing.assert_allclose(reward, ro.rewards[t].double().numpy(), atol=2e-5)  # 0 on reset steps too
        np.testing.assert_array_equal(info["_kl"], ro.valid[t].numpy())


def test_missing_or_bad_logprob_is_a_clear_error(kw):
    env = CompleteKLReward(gym.make("TextGen-IMDB-v0", **kw))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="logprob="):
        env.step(5)
    with pytest.raises(ValueError, match="log-probabilities"):
        env.step(5, logprob=0.7)
    _, reward, _, _, info = env.step(5, logprob=-2.0)  # a refused call left the env unchanged
    assert reward == pytest.approx(kw["kl_coef"] * (info["ref_logprob"] + 2.0))
    assert info["kl"] == pytest.approx(-2.0 - info["ref_logprob"])
    with pytest.raises(ValueError, match="no kl_coef"):
        CompleteKLReward(gym.make("CatGrid-v0"))
    env.kl_coef = 0.0  # β = 0: nothing to add, logprob may be omitted
    _, reward, terminated, _, info = env.step(6)
    assert reward == (info["score"] if terminated else 0.0)
