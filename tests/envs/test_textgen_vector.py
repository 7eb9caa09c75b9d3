"""Tests of envs.textgen_vector: the native vector TextGen-IMDB-v0 (rewards with NEXT_STEP autoreset, equality
with the single env, kl_coef get/set and β = 0, action errors, prompt groups)."""

from __future__ import annotations

import numpy as np
import pytest
from env_helpers import real_tokens, ref_logprobs
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401  (registers the envs)
from envs.textgen import TextGenEnv
from envs.textgen_vector import TextGenVectorEnv

pytestmark = pytest.mark.usefixtures("one_thread")


def _vector_episodes(venv: TextGenVectorEnv, action_fn, steps: int) -> list[dict]:
    """Run ``steps`` steps; return finished episodes: prompt, actions, rewards, score."""
    obs, _ = venv.reset(seed=0)
    n = venv.num_envs
    running = [{"prompt": real_tokens(obs, i), "actions": [], "rewards": []} for i in range(n)]
    done_prev, finished = np.zeros(n, bool), []
    for t in range(steps):
        actions = action_fn(t)
        obs, rewards, terminated, truncated, info = venv.step(actions)
        assert not truncated.any()
        for i in range(n):
            if done_prev[i]:  # autoreset step: reward 0, new prompt, not done
                assert rewards[i] == 0 and not terminated[i] and info["new_tokens"][i] == 0
                assert not info["_ref_logprob"][i]
                running[i] = {"prompt": real_tokens(obs, i), "actions": [], "rewards": []}
                continue
            running[i]["actions"].append(int(actions[i]))
            running[i]["rewards"].append(float(rewards[i]))
            assert real_tokens(obs, i) == running[i]["prompt"] + running[i]["actions"]
            if terminated[i]:
                assert info["_score"][i] and info["_text"][i]
                finished.append({**running[i], "score": float(info["score"][i]), "text": info["text"][i]})
        assert not info.get("_score", np.zeros(n, bool))[~terminated].any()
        done_prev = terminated
    return finished


def test_vector_rewards_decompose_with_autoreset(kw, tiny_lm, tiny_tokenizer) -> None:
    venv = TextGenVectorEnv(6, **kw)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    rng = np.random.default_rng(1)
    eos = tiny_tokenizer.eos_token_id

    def actions(t: int) -> np.ndarray:
        a = rng.integers(0, venv.single_action_space.n, 6)
        return np.where(rng.random(6) < 0.12, eos, a)

    episodes = _vector_episodes(venv, actions, 60)
    assert len(episodes) >= 12 and len({len(e["actions"]) for e in episodes}) > 3
    for ep in episodes:
        expected = 0.3 * ref_logprobs(tiny_lm, ep["prompt"], ep["actions"])
        expected[-1] += ep["score"]
        np.testing.assert_allclose(ep["rewards"], expected, atol=1e-4)
        assert ep["actions"][-1] == eos or len(ep["actions"]) == 16


def test_vector_equals_single_env(kw, texts) -> None:
    """Same prompt (one review, fixed prompt length), same tokens -> same rewards in both envs."""
    kw = {**kw, "dataset": texts[:1], "prompt_min_len": 4, "prompt_max_len": 4, "max_new_tokens": 5}
    plan = np.random.default_rng(2).integers(0, 8000, (14, 3))
    plan[2, 1] = plan[6, 2] = kw["tokenizer"].eos_token_id
    episodes = _vector_episodes(TextGenVectorEnv(3, **kw), lambda t: plan[t], 14)
    assert len(episodes) >= 5
    env = TextGenEnv(**kw)
    for ep in episodes:
        obs, _ = env.reset()
        assert real_tokens(obs) == ep["prompt"]
        rewards = [env.step(a)[1] for a in ep["actions"]]
        np.testing.assert_allclose(rewards, ep["rewards"], atol=1e-5)


def test_kl_coef_zero_and_switching_on(kw, tiny_lm) -> None:
    venv = TextGenVectorEnv(4, **{**kw, "kl_coef": 0.0})
    obs, _ = venv.reset(seed=0)
    prompts = [real_tokens(obs, i) for i in range(4)]
    _, rewards, _, _, info = venv.step(np.array([5, 6, 7, 8]))
    assert (rewards == 0).all() and info["_ref_logprob"].all()
    for i in range(4):  # log π_ref is reported for β = 0 too (exact KL logging)
        assert info["ref_logprob"][i] == pytest.approx(ref_logprobs(tiny_lm, prompts[i], [5 + i])[-1], abs=1e-4)
    assert venv.get_attr("kl_coef") == (0.0,) * 4
    venv.set_attr("kl_coef", [0.5] * 4)  # the reference catches up with the rows' current text
    assert venv.kl_coef == 0.5
    _, rewards, _, _, info = venv.step(np.array([9, 10, 11, 12]))
    for i in range(4):
        expected = 0.5 * ref_logprobs(tiny_lm, prompts[i], [5 + i, 9 + i])[-1]
        assert rewards[i] == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="shared by all 4 rows"):
        venv.set_attr("kl_coef", [0.1, 0.2, 0.1, 0.1])
    with pytest.raises(ValueError, match="kl_coef must be"):
        venv.kl_coef = -1.0
    with pytest.raises(AttributeError, match="no attribute"):
        venv.set_attr("no_such_thing", 1)


def test_vector_action_errors(kw) -> None:
    venv = TextGenVectorEnv(3, **kw)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(3, np.int64))
    venv.reset(seed=0)
    V = venv.single_action_space.n
    for bad in (np.zeros(2, np.int64), np.zeros(3), np.array([0, 1, V])):
        with pytest.raises(ValueError, match="actions must be"):
            venv.step(bad)


def _prompt_tokens(obs: dict, info: dict, row: int) -> list[int]:
    toks = real_tokens(obs, row)
    return toks[: int(info["prompt_len"][row])]


def test_group_size_rows_share_prompt_per_episode(kw, tiny_tokenizer) -> None:
    """Rows of a group continue the same prompt in every episode, even when their episodes end at
    different steps (EOS); group ids are shared inside a group and new for every group episode."""
    N, k, eos = 6, 3, tiny_tokenizer.eos_token_id
    env = TextGenVectorEnv(N, **(kw | {"max_new_tokens": 3, "group_size": k}))
    obs, info = env.reset(seed=0)
    prompts = {}  # (row, episode) -> prompt tokens
    gids = {}  # (row, episode) -> group id
    episode = np.zeros(N, dtype=int)
    for r in range(N):
        prompts[r, 0], gids[r, 0] = _prompt_tokens(obs, info, r), int(info["group_id"][r])
    rng = np.random.default_rng(0)
    for _ in range(30):
        # row 0 often stops at once (EOS), so its episodes run ahead of rows 1 and 2 of its group
        actions = rng.integers(3, len(tiny_tokenizer), size=N)
        actions[0] = eos if rng.random() < 0.7 else actions[0]
        was_done, before = env._autoreset.copy(), info["group_id"].copy()
        obs, _, term, _, info = env.step(actions)
        for r in np.flatnonzero(was_done):
            episode[r] += 1
            prompts[r, episode[r]], gids[r, episode[r]] = _prompt_tokens(obs, info, r), int(info["group_id"][r])
        assert np.array_equal(info["group_id"][~was_done], before[~was_done])  # an episode keeps its id
    assert episode[0] > episode[1] >= 1  # misaligned groups really happened
    for (r, e), p in prompts.items():
        first = (r // k) * k
        if (first, e) in prompts:
            assert p == prompts[first, e], (r, e)
            assert gids[r, e] == gids[first, e]
    ids = {(r // k, e): g for (r, e), g in gids.items()}
    assert len(set(ids.values())) == len(ids)  # one new id per (group, episode)


def test_group_size_one_keeps_prompt_stream_and_ids_unique(kw) -> None:
    a = TextGenVectorEnv(4, **kw)
    b = TextGenVectorEnv(4, **(kw | {"group_size": 1}))
    oa, ia = a.reset(seed=5)
    ob, ib = b.reset(seed=5)
    assert np.array_equal(oa["input_ids"], ob["input_ids"])
    assert len(set(ia["group_id"].tolist())) == 4 and ia["_group_id"].all()


def test_group_size_errors_and_single_env_ignores_it(kw) -> None:
    with pytest.raises(ValueError, match="multiple of group_size"):
        TextGenVectorEnv(5, **(kw | {"group_size": 2}))
    with pytest.raises(ValueError, match="group_size"):
        TextGenVectorEnv(4, **(kw | {"group_size": 0}))
    env = TextGenEnv(**(kw | {"group_size": 4}))
    _, info = env.reset(seed=0)
    _, _, _, _, info = env.step(5)
    assert "group_id" not in info
