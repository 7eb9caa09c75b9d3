"""Action masks: exact masked sampling / log-probs / entropy, the same distribution at rollout and update,
compact storage, and no EOS before min_new_tokens when the agent drives TextGen-IMDB-v0."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import envs  # noqa: F401  (registers the envs)
from agents.agent import Agent, AgentConfig, Rollout
from agents.masking import ActionMasks, apply_mask, mask_from_info, unique_rows
from agents.networks import PolicyValueNet
from agents.rollout import RolloutCollector
from envs.imdb import load_imdb

pytestmark = pytest.mark.usefixtures("one_thread")


class FixedLogits(PolicyValueNet):
    """The same trainable logits (A,) in every state, V = 0: a policy whose distribution we know by hand."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.z = nn.Parameter(torch.tensor(logits))
        self.v = nn.Parameter(torch.zeros(()))

    def act(self, obs, episode_start):  # called under no_grad: return computed tensors, not parameter views
        n = len(episode_start)
        return (self.z + 0.0).expand(n, -1), (self.v + 0.0).expand(n)

    def evaluate(self, batch):
        b = batch.actions.shape[0]
        return self.z.expand(b, -1), self.v.expand(b)


def hand_masked(z: list[float], allowed: list[int]) -> tuple[np.ndarray, float]:
    """Masked softmax and its entropy, by the formula: p_a = e^{z_a} / Σ_{b allowed} e^{z_b}."""
    e = np.array([np.exp(z[a]) if a in allowed else 0.0 for a in range(len(z))])
    p = e / e.sum()
    return p, float(-sum(p[a] * np.log(p[a]) for a in allowed))


def test_masked_sample_logprob_and_greedy_are_exact() -> None:
    z = [1.0, 2.0, 3.0, 4.0]
    p, _ = hand_masked(z, [0, 1, 2])  # the most likely action (3) is forbidden
    logits = torch.tensor(z).expand(20000, -1)
    mask = torch.tensor([True, True, True, False]).expand(20000, -1)
    torch.manual_seed(0)
    actions, logp = Agent.sample(logits, mask=mask)
    assert (actions != 3).all()
    assert np.allclose(logp.numpy(), np.log(p[actions.numpy()]), atol=1e-6)  # exact sampling log-probs
    freq = np.bincount(actions.numpy(), minlength=4) / 20000
    assert np.abs(freq - p).max() < 0.015  # 3.5 standard errors at p ~ 0.67
    assert Agent.sample(logits[:2], greedy=True, mask=mask[:2])[0].tolist() == [2, 2]
    assert torch.equal(apply_mask(logits, None), logits)
    unmasked, _ = Agent.sample(logits[:5000])
    assert (unmasked == 3).any()  # the mask, not the logits, kept action 3 out


def test_update_uses_the_masked_distribution_for_logprob_and_entropy() -> None:
    z = [0.5, 3.0, -1.0, 1.0, 2.0]
    T, N, A = 3, 4, len(z)
    g = torch.Generator().manual_seed(0)
    allowed = [[0, 2, 3], [0, 1, 2, 3, 4], [2, 3]]
    masks = [torch.zeros((N, A), dtype=torch.bool) for _ in range(T)]
    for t in range(T):
        masks[t][:, allowed[t]] = True
    masks[1][0, 1] = False  # one row differs from the others at t = 1
    net = FixedLogits(z)
    torch.manual_seed(1)
    steps = [Agent.sample(net.z.detach().expand(N, -1), mask=m) for m in masks]
    ro = Rollout(obs=torch.zeros(T, N, 1), actions=torch.stack([a for a, _ in steps]),
                 logprobs=torch.stack([lp for _, lp in steps]), values=torch.zeros(T + 1, N),
                 rewards=torch.randn(T, N, generator=g), terminated=torch.tensor([[0] * N, [0] * N, [1] * N]).bool(),
                 truncated=torch.zeros(T, N, dtype=torch.bool), episode_start=torch.tensor([[1] * N, [0] * N, [0] * N]).bool(),
                 valid=torch.ones(T, N, dtype=torch.bool), action_masks=ActionMasks.stack(masks))
    agent = Agent(net, AgentConfig(update_epochs=1, num_minibatches=1, learning_rate=1e-3))
    stats = agent.update(ro)
    ent = [hand_masked(z, allowed[t])[1] for t in range(T)]
    ent_row0 = hand_masked(z, [0, 2, 3, 4])[1]
    expected = (N * ent[0] + (N - 1) * ent[1] + ent_row0 + N * ent[2]) / (T * N)
    assert stats["entropy"] == pytest.approx(expected, abs=1e-5)
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-7)  # rollout and update: one distribution

    ro.action_masks = None  # the bug this catches: sampling masked, updating unmasked
    agent = Agent(FixedLogits(z), AgentConfig(update_epochs=1, num_minibatches=1, learning_rate=1e-3))
    assert agent.update(ro)["approx_kl"] > 1e-3


def test_compact_masks_round_trip_and_stay_small() -> None:
    g = torch.Generator().manual_seed(0)
    masks = []
    for _ in range(17):
        base = torch.rand(3, 1000, generator=g) > 0.1  # three distinct rows per step
        masks.append(base[torch.randint(0, 3, (64,), generator=g)])
    masks[0][:] = True
    stored = ActionMasks.stack(masks)
    assert torch.equal(stored.dense(), torch.stack(masks))
    assert stored.table.shape[0] <= 1 + 3 * 16 and stored.index.shape == (17, 64)
    table, index = unique_rows(masks[0])
    assert table.shape == (1, 1000) and (index == 0).all()
    info = {"action_mask": np.zeros((2, 3), np.int8), "_action_mask": np.array([True, False])}
    assert mask_from_info(info, 2, torch.device("cpu")).tolist() == [[False] * 3, [True] * 3]
    assert mask_from_info({}, 2, torch.device("cpu")) is None


def test_agent_never_emits_eos_before_min_new_tokens(tiny_lm, tiny_tokenizer) -> None:
    eos, V = tiny_tokenizer.eos_token_id, len(tiny_tokenizer)
    z = [0.0] * V
    z[eos] = 12.0  # the unmasked policy would end almost every step: p(EOS) ~ 0.95
    texts = [r["text"] for r in load_imdb("train", limit=100, seed=0)]
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=16, vectorization_mode="vector_entry_point", model=tiny_lm,
                        tokenizer=tiny_tokenizer, reward_model=lambda t: [0.0] * len(t), dataset=texts, device="cpu",
                        kl_coef=0.0, max_new_tokens=(6, 8), min_new_tokens=4)
    agent = Agent(FixedLogits(z), AgentConfig())
    collector = RolloutCollector(venv, agent, num_steps=40, seed=0)
    torch.manual_seed(0)
    ro, log = collector.collect()  # a masked action would make the env raise
    lengths = [len(tiny_tokenizer(r, add_special_tokens=False)["input_ids"]) for r in log.responses]
    assert len(lengths) > 60 and min(lengths) == 5 and np.mean(lengths) < 5.5  # 4 tokens, then EOS at once
    dense = ro.action_masks.dense()  # (T, N, V)
    assert dense.shape == (40, 16, V) and ro.action_masks.table.shape[0] <= 2 * 40
    assert not dense[ro.episode_start][:, eos].any()  # first token of an episode: EOS masked
    catgrid = gym.make_vec("CatGrid-v0", num_envs=2, vectorization_mode="vector_entry_point")
    from agents.networks import build_network
    net = build_network(catgrid.single_observation_space, catgrid.single_action_space)
    ro, _ = RolloutCollector(catgrid, Agent(net, AgentConfig()), num_steps=4, seed=0).collect()
    assert ro.action_masks is None  # CatGrid: no mask, unmasked policy
