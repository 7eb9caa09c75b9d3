"""Gradient accumulation (``micro_batch_size``): a minibatch evaluated in passes of at most that many chunks gives
the update of the minibatch in one pass (PPO, GRPO with its KL loss term, every loss aggregation), and each pass
really holds at most that many sequences."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest
import torch

import envs  # noqa: F401  (registers the envs)
from agents.agent import Agent, AgentConfig
from agents.batch import micro_slices
from agents.networks import CausalLMPolicy, StepBatch
from agents.rollout import RolloutCollector
from envs.imdb import load_imdb

pytestmark = pytest.mark.usefixtures("one_thread")


def e_score(texts: list[str]) -> list[float]:
    return [t.count("e") / 10.0 for t in texts]


@pytest.fixture(scope="module")
def texts(imdb_dir) -> list[str]:
    return [r["text"] for r in load_imdb("train", source=imdb_dir, limit=100, seed=0)]


def rollout_and_net(tiny_lm, tiny_tokenizer, texts, algo: str):
    group = {"group_size": 2} if algo == "grpo" else {}
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=4, vectorization_mode="vector_entry_point",
                        model=copy.deepcopy(tiny_lm), tokenizer=tiny_tokenizer, reward_model=e_score, dataset=texts,
                        max_new_tokens=5, prompt_min_len=2, prompt_max_len=6, kl_coef=0.3, device="cpu", **group)
    net = CausalLMPolicy(copy.deepcopy(tiny_lm))
    with torch.no_grad():  # a policy apart from the reference: the KL terms are not 0
        for p in net.lm.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    kl = "loss" if algo == "grpo" else "reward"
    collector = RolloutCollector(venv, Agent(net, AgentConfig(algo=algo, kl_mode=kl)), 13, seed=0, **group)
    return collector.collect()[0], net


@pytest.fixture(scope="module")
def rollouts(tiny_lm, tiny_tokenizer, texts):
    return {algo: rollout_and_net(tiny_lm, tiny_tokenizer, texts, algo) for algo in ("ppo", "grpo")}


@pytest.mark.parametrize("algo, kw", [
    ("ppo", {}),
    ("ppo", {"norm_adv_scope": "minibatch", "loss_aggregation": "sequence_mean"}),  # statistics of the whole minibatch
    ("grpo", {"kl_mode": "loss"}),
    ("grpo", {"kl_mode": "loss", "loss_aggregation": "sequence_mean"}),
])
def test_micro_batches_give_the_same_update(rollouts, algo, kw) -> None:
    ro, net = rollouts[algo]
    results = {}
    for size in (None, 1, 3):
        agent = Agent(copy.deepcopy(net), AgentConfig(algo=algo, gamma=1.0, learning_rate=1e-3, update_epochs=1,
                                                      num_minibatches=2, micro_batch_size=size, **kw))
        rows: list[int] = []
        evaluate = agent.net.evaluate

        def counted(batch: StepBatch, evaluate=evaluate, rows=rows) -> tuple[torch.Tensor, torch.Tensor]:
            rows.append(batch.chunk_last.numel())
            return evaluate(batch)

        agent.net.evaluate = counted  # type: ignore[method-assign]
        torch.manual_seed(0)  # the same minibatch shuffle
        stats = agent.update(copy.deepcopy(ro))
        results[size] = (stats, {n: p.detach().clone() for n, p in agent.net.named_parameters()}, rows)
    (stats0, params0, rows0) = results[None]
    for size in (1, 3):
        stats, params, rows = results[size]
        assert max(rows) <= size and len(rows) > len(rows0)  # really split, each pass at most `size` chunks
        assert sum(rows) == sum(rows0)
        moved = max(float((params0[n] - net.state_dict()[n]).abs().max()) for n in params0 if n in net.state_dict())
        assert moved > 1e-4  # the update did something
        for name, p in params0.items():  # Adam (eps 1e-5) turns a float32 rounding difference δ of a gradient
            # near 0 into an update difference of up to lr/eps·δ = 100·δ: 1e-5 covers that, a wrong weighting moves
            # parameters by ~lr = 1e-3
            torch.testing.assert_close(params[name], p, atol=1e-5, rtol=0, msg=name)
        for key in ("policy_loss", "entropy", "approx_kl", "clipfrac", "kl_loss", "value_loss"):
            if key in stats0:
                assert stats[key] == pytest.approx(stats0[key], abs=1e-6, rel=1e-5), key


def test_micro_slices_cut_between_whole_chunks() -> None:
    chunk = torch.tensor([3, 3, 4, 7, 7, 7, 8])  # chunks of 2, 1, 3 and 1 steps
    assert micro_slices(chunk, 1) == [(0, 2), (2, 3), (3, 6), (6, 7)]
    assert micro_slices(chunk, 2) == [(0, 3), (3, 7)]
    assert micro_slices(chunk, 3) == [(0, 6), (6, 7)]
    assert micro_slices(chunk, 4) == micro_slices(chunk, 9) == [(0, 7)]


@pytest.mark.parametrize("size", [0, -2, 1.5])
def test_a_micro_batch_size_below_one_is_refused(size) -> None:
    with pytest.raises(ValueError, match="micro_batch_size must be"):
        AgentConfig(micro_batch_size=size)
