"""LM rollouts store one context per chunk (agents/history_obs.py), and the update learns exactly what it learns
from the full (T, N, L) stack of every step's context: same rollouts, same carried groups, same parameters."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401
from agents.agent import Agent, AgentConfig
from agents.batch import chunk_ids
from agents.history_obs import HistoryObs, chunk_ends, obs_nbytes
from agents.networks import CausalLMPolicy
from agents.rollout import RolloutCollector
from envs.imdb import load_imdb
from runners.common.resume import pack_carry, unpack_carry


@pytest.fixture(scope="module")
def text_kw(imdb_dir, tiny_lm, tiny_tokenizer) -> dict:
    texts = [row["text"] for row in load_imdb("train", source=imdb_dir, limit=100, seed=2)]
    score = lambda ts: [t.count("e") / 10.0 for t in ts]  # noqa: E731
    return {"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": score, "dataset": texts, "device": "cpu",
            "kl_coef": 0.2, "max_new_tokens": 6, "prompt_min_len": 2, "prompt_max_len": 5, "group_size": 2}


def _run(text_kw: dict, tiny_lm, full_obs: bool, updates: int = 2) -> tuple[Agent, list]:
    """GRPO (minibatches, micro-batches, epochs, groups carried across rollouts) from one seed: the rollouts and
    carries it saw, and the agent after ``updates`` updates."""
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=4, vectorization_mode="vector_entry_point", **text_kw)
    torch.manual_seed(0)
    lm = copy.deepcopy(tiny_lm)
    config = AgentConfig(algo="grpo", gamma=1.0, learning_rate=1e-3, num_minibatches=2, update_epochs=2,
                         micro_batch_size=1)
    agent = Agent(CausalLMPolicy(lm), config)
    collector = RolloutCollector(venv, agent, 9, seed=0, group_size=2, full_obs=full_obs)
    seen = []
    for _ in range(updates):
        ro, _ = collector.collect()
        agent.update(ro)
        seen.append((ro, agent.carry))
    return agent, seen


def _dense(ro_full, ho: HistoryObs, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored contexts and the full stack's contexts of the same steps (K, L) each."""
    t, n = torch.nonzero(ho.slot >= 0, as_tuple=True)
    return ho.contexts[key][ho.slot[t, n]], ro_full.obs[key][t, n]


def test_one_context_per_chunk_and_the_same_update_as_the_full_stack(text_kw, tiny_lm, one_thread) -> None:
    hist_agent, hist = _run(text_kw, tiny_lm, full_obs=False)
    full_agent, full = _run(text_kw, tiny_lm, full_obs=True)
    carried = 0
    for (ro_h, carry_h), (ro_f, carry_f) in zip(hist, full):
        assert isinstance(ro_h.obs, HistoryObs) and isinstance(ro_f.obs, dict)
        for name in ("actions", "logprobs", "values", "rewards", "valid", "episode_start", "group"):
            assert torch.equal(getattr(ro_h, name), getattr(ro_f, name)), name  # the same rollout
        T, N = ro_h.valid.shape
        chunk = chunk_ids(ro_h.episode_start.numpy(), ro_h.valid.numpy())  # (N*T,) column-major
        ends = np.r_[chunk[1:] != chunk[:-1], True].reshape(N, T).T  # (T, N) last step of each chunk
        slot = ro_h.obs.slot.numpy()
        assert (slot[ends] >= 0).all() and (slot[~ends] == -1).all()  # exactly the chunk ends are stored
        K = ro_h.obs.contexts["input_ids"].shape[0]
        assert K == chunk.max() + 1 < T * N / 2  # one context per chunk
        for key in ("input_ids", "attention_mask"):
            stored, dense = _dense(ro_f, ro_h.obs, key)
            assert torch.equal(stored, dense)
        # the measured saving: T steps per row -> one context per chunk
        assert obs_nbytes(ro_h.obs) * T * N == obs_nbytes(ro_f.obs) * K
        if carry_h is not None:
            carried += 1
            assert isinstance(carry_h.obs, HistoryObs) and carry_f is not None
            assert carry_h.obs.contexts["input_ids"].shape[0] <= int((carry_h.obs.slot >= 0).sum())
            for key in ("input_ids", "attention_mask"):
                stored, dense = _dense(carry_f, carry_h.obs, key)
                assert torch.equal(stored, dense)
            back = unpack_carry(pack_carry(carry_h), torch.device("cpu"))  # resume: the carry round-trips
            assert isinstance(back.obs, HistoryObs) and torch.equal(back.obs.slot, carry_h.obs.slot)
    assert carried >= 1  # groups waited across a rollout boundary
    for (name, p), q in zip(hist_agent.net.named_parameters(), full_agent.net.parameters()):
        assert torch.equal(p, q), name  # bit-identical update
    assert any(not torch.equal(p, q) for p, q in zip(hist_agent.net.lm.parameters(), tiny_lm.parameters()))


def test_chunk_ends_are_the_last_steps_of_chunk_ids() -> None:
    """The collector's per-step rule (known after each step) marks exactly the chunks' last steps."""
    rng = np.random.default_rng(0)
    T, N = 12, 5
    done = rng.random((T, N)) < 0.3
    valid, start = np.ones((T, N), dtype=bool), np.zeros((T, N), dtype=bool)
    start[0] = True
    for t in range(1, T):  # NEXT_STEP autoreset: the step after an end is a reset step, the one after it a start
        valid[t], start[t] = ~(done[t - 1] & valid[t - 1]), ~valid[t - 1]
    got = np.stack([chunk_ends(valid[t], valid[t + 1] if t + 1 < T else valid[t], start[t + 1] if t + 1 < T
                               else start[t], last=t == T - 1) for t in range(T)])  # (T, N)
    chunk = chunk_ids(start, valid)
    want = np.r_[chunk[1:] != chunk[:-1], True].reshape(N, T).T
    assert (~valid).sum() >= 5 and np.array_equal(got, want)


def test_time_slice_and_cat_by_hand() -> None:
    # 3 steps x 2 rows; stored: (0, 1) -> context 0, (2, 0) -> 1, (2, 1) -> 2
    ctx = {"input_ids": torch.tensor([[0, 5], [6, 7], [8, 9]])}
    ho = HistoryObs(ctx, torch.tensor([[-1, 0], [-1, -1], [1, 2]]))
    tail = ho.time_slice(1, 3)  # only the last row's contexts are kept, renumbered
    assert tail.slot.tolist() == [[-1, -1], [0, 1]] and tail.contexts["input_ids"].tolist() == [[6, 7], [8, 9]]
    both = HistoryObs.cat(tail, ho)
    assert both.slot.tolist() == [[-1, -1], [0, 1], [-1, 2], [-1, -1], [3, 4]]
    flat = both.flatten()  # column-major: row 0's 5 steps, then row 1's
    assert flat.at(torch.tensor([1, 7]))["input_ids"].tolist() == [[6, 7], [0, 5]]
    assert both.step(2, 1)["input_ids"].tolist() == [0, 5]
    with pytest.raises(RuntimeError, match="does not end its chunk"):
        flat.at(torch.tensor([0]))
