"""The architecture matrix (tiny random configs of every supported family, see ``tests/lm_zoo.py``): through the
text env and the agent, the rollout's log-probs, the env's ``ref_logprob`` and the per-token reward equal plain
unpadded ``model(ids).logits`` forwards of each episode; an update runs; the export reloads to the same logits."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from lm_zoo import FAMILIES, tiny_model
from transformers import AutoModelForCausalLM

import envs  # noqa: F401  (registers the envs)
from agents.agent import Agent, AgentConfig
from agents.networks import CausalLMPolicy
from agents.rollout import RolloutCollector
from envs.imdb import load_imdb
from runners.common.export import export_policy

BETA = 0.3
TOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")


def e_score(texts: list[str]) -> list[float]:
    return [t.count("e") / 10.0 for t in texts]


@pytest.fixture(scope="module")
def texts(imdb_dir) -> list[str]:
    return [r["text"] for r in load_imdb("train", limit=100, seed=0)]


def plain_logprobs(model, tokens: list[int], n: int) -> np.ndarray:
    """log p of the last ``n`` tokens of ``tokens`` by one plain unpadded forward (n,)."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([tokens])).logits[0].double(), -1)  # (L, V)
    pos = torch.arange(len(tokens) - n - 1, len(tokens) - 1)
    return logp[pos, torch.tensor(tokens)[pos + 1]].numpy()


def episodes(ro) -> list[tuple[int, int, int]]:
    """(end step, env, start step) of every episode that starts and ends inside the rollout."""
    out = []
    T, N = ro.actions.shape
    for i in range(N):
        start = None
        for t in range(T):
            if ro.episode_start[t, i]:
                start = t
            if start is not None and ro.valid[t, i] and ro.terminated[t, i]:
                out.append((t, i, start))
                start = None
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_rollout_reference_reward_update_and_export_are_exact(family, tiny_tokenizer, texts, tmp_path) -> None:
    tok = tiny_tokenizer
    model = tiny_model(family, vocab_size=len(tok), pad=tok.pad_token_id, bos=tok.bos_token_id, eos=tok.eos_token_id)
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=3, vectorization_mode="vector_entry_point", model=model,
                        tokenizer=tok, reward_model=e_score, dataset=texts, max_new_tokens=6, prompt_min_len=3,
                        prompt_max_len=7, kl_coef=BETA, device="cpu")
    policy = copy.deepcopy(model)
    with torch.no_grad():  # the policy differs from the reference: the KL term is not trivially zero
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    agent = Agent(CausalLMPolicy(policy), AgentConfig(gamma=1.0, update_epochs=1, num_minibatches=1))
    ro, log = RolloutCollector(venv, agent, 8, seed=0).collect()
    found = episodes(ro)
    assert len(found) >= 3 and len(log.scores) >= len(found)
    for end, i, start in found:
        last = ro.obs.step(end, i)  # an episode's last step: its context is stored
        tokens = last["input_ids"][last["attention_mask"] == 1].tolist() + [int(ro.actions[end, i])]
        assert len(tokens) > 4  # longer than the sliding windows
        n = end - start + 1
        lp_pol, lp_ref = plain_logprobs(policy, tokens, n), plain_logprobs(model, tokens, n)
        np.testing.assert_allclose(ro.logprobs[start:end + 1, i].double().numpy(), lp_pol, atol=TOL)
        expected = -BETA * (lp_pol - lp_ref)  # per token: the reward is the env's β·log π_ref minus β·log π_θ
        expected[-1] += e_score([tok.decode(tokens, skip_special_tokens=True)])[0]
        np.testing.assert_allclose(ro.rewards[start:end + 1, i].double().numpy(), expected, atol=TOL)
    probe = torch.tensor([[5, 17, 300, 42, 9, 1000, 7, 8]])
    with torch.no_grad():
        before = policy(probe).logits
    stats = agent.update(ro)
    assert stats and all(np.isfinite(v) for v in stats.values())
    out = export_policy(agent.net, tok, tmp_path, 6)
    with torch.no_grad():
        assert (policy(probe).logits - before).abs().max() > 1e-6  # the update trained the policy
        reloaded = AutoModelForCausalLM.from_pretrained(out).eval()(probe).logits
        assert torch.allclose(reloaded, policy(probe).logits, atol=1e-5, rtol=0)
