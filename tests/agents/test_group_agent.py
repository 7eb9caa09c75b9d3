"""RLOO / GRPO in the one agent: group advantages on a hand-made rollout, group ids from the
collector, the k3 KL loss switch, and learning a corridor."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import pytest
import torch
from hand_rollouts import group_rollout

import envs  # noqa: F401
from agents import losses
from agents.agent import Agent, AgentConfig
from agents.networks import GridTransformer
from agents.rollout import RolloutCollector
from envs.catgrid_vector import CatGridVectorEnv
from runners.common.evaluation import evaluate

SEED = 0  # a seed whose random policy ends episodes at different steps (some rows idle)


def _agent(algo: str, **kw) -> Agent:
    venv = CatGridVectorEnv(num_envs=1)
    net = GridTransformer.from_spaces(venv.single_observation_space, venv.single_action_space, d_model=16, n_layer=1)
    return Agent(net, AgentConfig(algo=algo, gamma=1.0, **kw))


def test_group_update_skips_value_loss_and_reports_groups():
    agent = _agent("rloo")
    head = [p.clone() for p in agent.net.parameters()]
    stats = agent.update(group_rollout())
    assert stats["group/episodes"] == 4 and stats["group/waiting"] == 1
    assert "explained_variance" not in stats and "value_loss" not in stats  # the value head is not trained
    assert any(not torch.equal(p, q) for p, q in zip(head, agent.net.parameters()))


def test_k3_by_hand():
    logp, ref = torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.2]))
    # ratio π_ref/π_θ = 0.5 → 0.5 - log 0.5 - 1; equal probabilities → 0
    assert losses.k3_kl(logp, ref).item() == pytest.approx((0.5 - math.log(0.5) - 1.0) / 2)


def test_collector_group_ids_are_the_eth_episode_of_each_row_of_a_block_on_catgrid():
    """Group e of block b (id e * 2 + b) is one episode of each of its 3 rows; a row that has played group e waits
    (idle episodes, id -1) until its whole block has finished group e, then plays e + 1."""
    venv = gym.wrappers.vector.RecordEpisodeStatistics(CatGridVectorEnv(num_envs=6, max_episode_steps=6))
    torch.manual_seed(SEED)
    agent = _agent("rloo")
    ro, _ = RolloutCollector(venv, agent, 40, seed=0, group_size=3).collect()
    assert ro.group_size == 3 and ro.group[0].tolist() == [0, 0, 0, 1, 1, 1]
    g, start = ro.group.numpy(), ro.episode_start.numpy()
    start[0] = True
    end = (ro.valid & (ro.terminated | ro.truncated)).numpy()
    first, last = {}, {}  # group id -> first start step / last end step over its rows
    for i in range(6):
        ids = [int(g[t, i]) for t in range(40) if start[t, i] and g[t, i] >= 0]
        assert ids == [e * 2 + i // 3 for e in range(len(ids))]  # 0, 1, 2, ... of its block, each once
        for t in range(40):
            if start[t, i] and g[t, i] >= 0:
                first[int(g[t, i])] = min(first.get(int(g[t, i]), 99), t)
            if end[t, i] and g[t, i] >= 0:
                last[int(g[t, i])] = max(last.get(int(g[t, i]), -1), t)
    assert (g[ro.valid.numpy()] == -1).any()  # some rows waited
    assert all(first[gid + 2] > last[gid] for gid in last if gid + 2 in first)  # e + 1 starts after e has ended
    with pytest.raises(ValueError, match="divide num_envs"):
        RolloutCollector(venv, agent, 8, seed=0, group_size=4)
    with pytest.raises(ValueError, match="group_size >= 2"):
        RolloutCollector(venv, agent, 8, seed=0, group_size=1)


@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_every_finished_episode_enters_the_loss_once_with_its_complete_group(algo):
    """Rollouts of 7 steps cut many CatGrid episodes, and group-mates finish in different rollouts. Count what
    enters the loss: every finished episode is learned exactly once, in a group of exactly k episodes; the
    others wait in the carry (running, or finished with a mate still running)."""
    venv = gym.wrappers.vector.RecordEpisodeStatistics(CatGridVectorEnv(num_envs=8, max_episode_steps=25))
    agent = _agent(algo, learning_rate=0.0)
    collector = RolloutCollector(venv, agent, 7, seed=0, group_size=4)
    finished = learned = waited = 0
    for _ in range(30):
        ro, _ = collector.collect()
        finished += int((ro.valid & (ro.terminated | ro.truncated) & (ro.group >= 0)).sum())  # idle ones never count
        ro, est = agent._learnable(ro)
        firsts = est.mask & ro.episode_start  # (T, N) first steps of the learned episodes
        _, counts = torch.unique(ro.group[firsts], return_counts=True)
        assert (counts == 4).all()  # whole groups of k = 4 episodes, never fewer
        learned += int(firsts.sum())
        waited += int(est.stats["group/waiting"] > 0)
    carry = agent.carry
    assert carry is not None
    waiting = int((carry.valid & (carry.terminated | carry.truncated)).sum())  # finished, their group not yet
    assert finished > 40 and waited > 5 and learned + waiting == finished, (finished, learned, waiting)


@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_group_algos_learn_corridor(algo):
    torch.manual_seed(0)
    venv = CatGridVectorEnv(num_envs=8, desc=["T.C.M"], slip=0.0, max_episode_steps=10)
    net = GridTransformer.from_spaces(venv.single_observation_space, venv.single_action_space, d_model=32, n_layer=1)
    agent = Agent(net, AgentConfig(algo=algo, learning_rate=3e-3, num_minibatches=2, anneal_lr=False))
    collector = RolloutCollector(venv, agent, 32, reward_scale=0.01, seed=0, group_size=4)
    for _ in range(40):
        agent.update(collector.collect()[0])
    res = evaluate(agent, CatGridVectorEnv(num_envs=2, desc=["T.C.M"], slip=0.0, max_episode_steps=10),
                   episodes=4, gamma=0.99, greedy=True, seed=1)
    assert res["success_rate"] == 1.0, algo


def test_bad_group_config():
    with pytest.raises(ValueError, match="kl_mode"):
        AgentConfig(kl_mode="both")
    with pytest.raises(ValueError, match="group_eps"):
        AgentConfig(algo="grpo", group_eps=0.0)
    assert AgentConfig(algo="grpo").clipped and AgentConfig(algo="rloo").group_based
    assert not AgentConfig(algo="rloo").clipped and not AgentConfig(algo="reinforce").group_based


@pytest.fixture
def text_kw(tiny_lm, tiny_tokenizer, imdb_dir) -> dict:
    from envs.imdb import load_imdb

    texts = [row["text"] for row in load_imdb("train", source=imdb_dir, limit=100, seed=1)]
    score = lambda ts: [10.0 * t.count("e") / max(len(t), 1) for t in ts]  # noqa: E731
    return {"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": score, "dataset": texts,
            "device": "cpu", "kl_coef": 0.3, "max_new_tokens": 4}


@pytest.mark.parametrize("kl_mode", ["reward", "loss"])
def test_text_groups_and_kl_mode(text_kw, tiny_lm, kl_mode, one_thread):
    """Text env with group_size: group ids come from the env; with kl_mode='loss' the learning
    reward is the score alone, log π_ref is recorded and the k3 term is in the update."""
    from agents.networks import CausalLMPolicy

    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=4, vectorization_mode="vector_entry_point",
                        **(text_kw | {"group_size": 2}))
    torch.manual_seed(0)
    lm = copy.deepcopy(tiny_lm)  # the session fixture stays untouched
    for mod in lm.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0  # old and new log-probs from the same function
    agent = Agent(CausalLMPolicy(lm).eval(), AgentConfig(algo="grpo", gamma=1.0, kl_mode=kl_mode,
                                                              learning_rate=1e-3, num_minibatches=1, update_epochs=1))
    collector = RolloutCollector(venv, agent, 10, seed=0, group_size=2)
    ro, log = collector.collect()
    g = ro.group.numpy()
    assert (g[:, 0] == g[:, 1]).all() and (g[:, 2] == g[:, 3]).all() and (g[:, 0] != g[:, 2]).all()
    if kl_mode == "loss":
        ended = (ro.terminated & ro.valid).numpy()
        assert sorted(ro.rewards.numpy()[ended].tolist()) == pytest.approx(sorted(log.scores), abs=1e-5)
        assert (ro.rewards.numpy()[~ended] == 0).all()
        assert ro.kl_coef == pytest.approx(0.3) and ro.ref_logprobs is not None
        assert (ro.ref_logprobs[ro.valid] < 0).all()
        # the policy starts as the reference: its sampling log-probs are the env's ref log-probs
        torch.testing.assert_close(ro.ref_logprobs[ro.valid], ro.logprobs[ro.valid], atol=1e-4, rtol=0)
        stats = agent.update(ro)
        assert stats["kl_loss"] == pytest.approx(0.0, abs=1e-6)  # one minibatch, evaluated before the step: the same model
        with torch.no_grad():  # a policy clearly off the reference: the KL is in the loss only, never in the reward
            for p in lm.parameters():
                p.add_(0.02 * torch.randn_like(p))
        ro, log = collector.collect()
        ended = (ro.terminated & ro.valid).numpy()
        assert not torch.allclose(ro.logprobs[ro.valid], ro.ref_logprobs[ro.valid], atol=1e-3)
        assert (ro.rewards.numpy()[~ended] == 0).all()
        assert sorted(ro.rewards.numpy()[ended].tolist()) == pytest.approx(sorted(log.scores), abs=1e-5)
    else:
        assert ro.ref_logprobs is None
        assert "kl_loss" not in agent.update(ro)


def test_train_cli_group_algos(tmp_path, capsys):
    from runners import train

    tiny = ["--total-timesteps", "1024", "--num-envs", "8", "--num-steps", "64", "--eval-episodes", "8",
            "--no-progress", "--threads", "1", "--d-model", "32", "--n-layer", "1", "--log-dir", str(tmp_path)]
    for algo in ("rloo", "grpo"):
        cfg = train.parse_args(["--algo", algo, *tiny])
        assert cfg.group_size == 4 and cfg.agent.algo == algo and cfg.agent.group_based
        result = train.train(cfg)
        assert result["global_step"] == 1024 and result["eval"]["greedy"]["episodes"] == 8
    for args, msg in ((["--algo", "rloo", "--group-size", "1"], "--group-size >= 2"),
                      (["--algo", "grpo", "--group-size", "3"], "divide num_envs")):
        with pytest.raises(SystemExit):  # tyro prints the config's own message with the usage
            train.parse_args([*args, *tiny])
        assert msg in " ".join(capsys.readouterr().err.split())  # tyro wraps long messages
    with pytest.raises(ValueError, match="group-size >= 2"):
        train.TrainConfig(algo="grpo")
    text = train.preset("TextGen-IMDB-v0", "grpo")
    assert text.agent.kl_mode == "loss" and text.group_size == 4 and text.agent.update_epochs == 4
