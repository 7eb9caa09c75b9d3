"""float16 training with a gradient scaler: on under float16 compute (``autocast_dtype`` or a float16 base), off
otherwise; a step whose scaled gradients overflow is skipped (weights and Adam untouched, counted, the scale
halved), and float16 trainable weights are refused (their gradients cannot be unscaled)."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest
import torch

import envs  # noqa: F401  (registers the envs)
from agents.agent import Agent, AgentConfig
from agents.networks import CausalLMPolicy
from agents.rollout import RolloutCollector
from envs.imdb import load_imdb

pytestmark = pytest.mark.usefixtures("one_thread")


def e_score(texts: list[str]) -> list[float]:
    return [t.count("e") / 10.0 for t in texts]


@pytest.fixture(scope="module")
def fp16_rollout(tiny_lm, tiny_tokenizer, imdb_dir):
    texts = [r["text"] for r in load_imdb("train", source=imdb_dir, limit=100, seed=0)]
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=4, vectorization_mode="vector_entry_point",
                        model=copy.deepcopy(tiny_lm), tokenizer=tiny_tokenizer, reward_model=e_score, dataset=texts,
                        max_new_tokens=5, prompt_min_len=2, prompt_max_len=6, kl_coef=0.3, device="cpu")
    net = CausalLMPolicy(copy.deepcopy(tiny_lm))
    net.autocast_dtype = torch.float16
    collector = RolloutCollector(venv, Agent(net, AgentConfig()), 8, seed=0)
    return collector.collect()[0], net


def fp16_agent(net: CausalLMPolicy) -> Agent:
    net = copy.deepcopy(net)
    net.autocast_dtype = torch.float16
    return Agent(net, AgentConfig(gamma=1.0, learning_rate=1e-3, update_epochs=1, num_minibatches=2))


def test_float16_compute_trains_through_the_scaler(fp16_rollout) -> None:
    ro, net = fp16_rollout
    agent = fp16_agent(net)
    plain = copy.deepcopy(net)
    plain.autocast_dtype = None  # float32 compute: no scaler
    assert agent.scaler.is_enabled() and not Agent(plain, AgentConfig()).scaler.is_enabled()
    before = {n: p.detach().clone() for n, p in agent.net.named_parameters()}
    stats = agent.update(copy.deepcopy(ro))
    assert (stats["skipped_steps"], stats["grad_scale"]) == (0.0, 65536.0)  # 2 steps taken at the initial scale
    moved = max(float((p.detach() - before[n]).abs().max()) for n, p in agent.net.named_parameters())
    # two Adam steps of at most lr = 1e-3 each; the largest gradients (>> eps = 1e-5) move by ~lr per step. Were
    # the scaled gradients clipped (no unscale first), each would be below 0.5 / 65536 < eps: moves < 0.43 lr
    assert 0.95e-3 < moved < 2.05e-3
    assert all(torch.isfinite(p).all() for p in agent.net.parameters())


def test_an_overflowing_step_is_skipped_not_a_failure(fp16_rollout) -> None:
    ro, net = fp16_rollout
    agent = fp16_agent(net)
    agent.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # the scaled float16 backward overflows
    before = {n: p.detach().clone() for n, p in agent.net.named_parameters()}
    stats = agent.update(copy.deepcopy(ro))
    assert (stats["skipped_steps"], stats["grad_scale"]) == (2.0, 2.0**98)  # both minibatch steps skipped
    assert all(torch.equal(p, before[n]) for n, p in agent.net.named_parameters())
    assert all(float(s["step"]) == 0 for s in agent.optimizer.state.values())  # Adam never stepped
    assert agent.num_updates == 1


def test_float16_trainable_weights_are_refused(tiny_lm) -> None:
    with pytest.raises(ValueError, match="float16 trainable weights.*LoRA adapter"):
        Agent(CausalLMPolicy(copy.deepcopy(tiny_lm).half()), AgentConfig())
