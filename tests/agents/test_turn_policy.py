"""The LM policy over multi-turn transcripts: rollout log-probs and values equal one teacher-forced pass over each
whole transcript (env tokens in the context, never actions), the update reads exactly those positions, env tokens
get no gradient, and the logged KL sums exactly the agent's tokens."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from turn_helpers import env_kwargs, tiny_lm

from agents import turn_policy
from agents.agent import Agent, AgentConfig
from agents.batch import chunk_ids, flatten, flatten_obs, make_batch
from agents.networks import build_network
from agents.rollout import RolloutCollector
from agents.turn_policy import TurnLMPolicy, step_positions
from envs.turn_env import TurnTokenVectorEnv

BETA = 0.1


def _perturbed(seed: int = 0) -> torch.nn.Module:
    """A copy of the reference with other weights, so log π_θ ≠ log π_ref."""
    out = copy.deepcopy(tiny_lm())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return out


@pytest.fixture(scope="module")
def collected():
    """One 40-step rollout of 4 rows (episodes end and restart inside it) and its episode log."""
    venv = gym.wrappers.vector.RecordEpisodeStatistics(TurnTokenVectorEnv(4, **env_kwargs(kl_coef=BETA)))
    net = build_network(venv.single_observation_space, venv.single_action_space, lm=_perturbed())
    assert isinstance(net, TurnLMPolicy)
    agent = Agent(net, AgentConfig(gamma=1.0))
    torch.manual_seed(0)
    collector = RolloutCollector(venv, agent, num_steps=40, seed=0)
    ro, log = collector.collect()
    return agent, ro, log


@pytest.fixture(scope="module")
def collected_full(collected):
    """The same rollout, every step's context stored (``full_obs=True``; the default stores one per chunk)."""
    agent = collected[0]
    venv = gym.wrappers.vector.RecordEpisodeStatistics(TurnTokenVectorEnv(4, **env_kwargs(kl_coef=BETA)))
    torch.manual_seed(0)
    ro, _ = RolloutCollector(venv, agent, num_steps=40, seed=0, full_obs=True).collect()
    assert torch.equal(ro.actions, collected[1].actions) and torch.equal(ro.logprobs, collected[1].logprobs)
    history = collected[1].obs
    t, n = torch.nonzero(history.slot >= 0, as_tuple=True)  # the chunk ends: stored as they are in the full stack
    for key in ("input_ids", "attention_mask", "agent_mask"):
        assert torch.equal(history.contexts[key][history.slot[t, n]], ro.obs[key][t, n])
    return agent, ro


def _plain(net: TurnLMPolicy, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """log-softmax (L, V) and values (L,) of one unpadded sequence, by a plain HF forward."""
    t = torch.tensor([ids])
    with torch.no_grad():
        h = net.lm.base_model(t).last_hidden_state[0]
        return torch.log_softmax(net.lm.lm_head(h).double(), -1), net.value_head(h).squeeze(-1)


def test_rollout_logprobs_and_values_equal_one_pass_over_each_transcript(collected_full) -> None:
    agent, ro = collected_full
    net, T, N = agent.net, *ro.actions.shape
    checked = 0
    for n in range(N):
        for t in range(T):
            if not ro.valid[t, n]:
                continue
            k = int(ro.obs["attention_mask"][t, n].sum())
            ids = ro.obs["input_ids"][t, n, -k:].tolist()
            logp, values = _plain(net, ids)
            assert float(logp[-1, ro.actions[t, n]]) == pytest.approx(float(ro.logprobs[t, n]), abs=1e-4)
            assert float(values[-1]) == pytest.approx(float(ro.values[t, n]), abs=1e-4)
            checked += 1
    assert checked > 120
    multi = (ro.obs["attention_mask"].sum(-1)[1:] - ro.obs["attention_mask"].sum(-1)[:-1]) > 1  # env turns came in
    assert int((multi & ro.valid[1:] & ~ro.episode_start[1:]).sum()) >= 8


def test_update_pass_reads_each_step_at_its_own_position(collected) -> None:
    """evaluate() over whole chunks (one teacher-forced pass each) gives the rollout's log-probs and values."""
    agent, ro, _ = collected
    T, N = ro.actions.shape
    chunk = torch.as_tensor(chunk_ids(ro.episode_start.numpy(), ro.valid.numpy()))
    obs, actions = flatten_obs(ro.obs), flatten(ro.actions)
    batch = make_batch(obs, actions, chunk, torch.arange(T * N))
    logits, values = agent.net.evaluate(batch)
    logp = torch.log_softmax(logits, -1).gather(1, actions[:, None])[:, 0]
    valid = flatten(ro.valid)
    torch.testing.assert_close(logp[valid], flatten(ro.logprobs)[valid], atol=1e-4, rtol=0)
    torch.testing.assert_close(values[valid], flatten(ro.values[:-1])[valid], atol=1e-4, rtol=0)


def test_step_positions_skip_env_tokens_by_hand() -> None:
    # a transcript e e a e e a a e: agent tokens at 2, 5, 6; the chunk's steps (last first) read 7, 5, 4, 1
    agent = torch.tensor([[0, 0, 1, 0, 0, 1, 1, 0]], dtype=torch.bool)
    got = step_positions(agent, torch.zeros(4, dtype=torch.long), torch.tensor([3, 2, 1, 0]))
    assert got.tolist() == [1, 4, 5, 7]


def test_env_tokens_get_no_gradient(collected, monkeypatch) -> None:
    agent, ro, _ = collected
    T, N = ro.actions.shape
    kept = []

    def keep(*args, **kw):
        hidden = forward(*args, **kw)
        hidden.retain_grad()
        kept.append(hidden)
        return hidden

    forward = turn_policy.forward_left_padded
    monkeypatch.setattr(turn_policy, "forward_left_padded", keep)
    chunk = torch.as_tensor(chunk_ids(ro.episode_start.numpy(), ro.valid.numpy()))
    obs, actions = flatten_obs(ro.obs), flatten(ro.actions)
    idx = torch.nonzero(flatten(ro.valid)).squeeze(1)  # the valid chunks (reset steps read a finished transcript)
    batch = make_batch(obs, actions, chunk, idx)
    logits, values = agent.net.evaluate(batch)
    loss = -(torch.log_softmax(logits, -1).gather(1, actions[idx, None])[:, 0] + values).sum()
    loss.backward()
    agent.net.zero_grad()
    grad = kept[0].grad.abs().sum(-1)  # (C, W)
    mask = batch.chunk_obs()["attention_mask"]
    agent_pos = batch.chunk_obs()["agent_mask"].bool()[:, -grad.shape[1] :]
    mask = mask[:, -grad.shape[1] :].bool()
    reads = torch.zeros_like(agent_pos)
    reads[:, :-1] = agent_pos[:, 1:]  # outputs that predict an agent token
    reads[:, -1] = True  # the chunk's last step
    assert (grad[mask & ~reads] == 0).all()  # outputs that would predict env tokens never enter the loss
    assert (grad[mask & reads] > 0).float().mean() > 0.9


def test_logged_kl_covers_exactly_the_agent_tokens(collected) -> None:
    agent, ro, log = collected
    assert len(log.kls) >= 4 and len(log.texts) == len(log.kls)
    net, ref = agent.net, tiny_lm()
    # each finished episode from the rollout: its last observation plus its final action
    ended = 0
    for n in range(ro.actions.shape[1]):
        for t in np.flatnonzero((ro.terminated[:, n] | ro.truncated[:, n]) & ro.valid[:, n]):
            obs = ro.obs.step(t, n)  # an episode's last step: its context is stored
            k = int(obs["attention_mask"].sum())
            ids = obs["input_ids"][-k:].tolist() + [int(ro.actions[t, n])]
            agent_mask = np.r_[obs["agent_mask"][-k:].numpy(), 1].astype(bool)
            pos = np.flatnonzero(agent_mask)
            t_ids = torch.tensor([ids])
            with torch.no_grad():
                lp = torch.log_softmax(net.lm(t_ids).logits[0].double(), -1)[pos - 1, t_ids[0, pos]]
                lr = torch.log_softmax(ref(t_ids).logits[0].double(), -1)[pos - 1, t_ids[0, pos]]
            assert float((lp - lr).sum()) in [pytest.approx(x, abs=1e-3) for x in log.kls]
            ended += 1
    assert ended == len(log.kls)
