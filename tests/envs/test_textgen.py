"""Tests of TextGen-IMDB-v0: single and native vector env, rewards with KL shaping, autoreset, errors."""

from __future__ import annotations

import gymnasium as gym
import huggingface_hub
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401  (registers the envs)
from envs.imdb import load_imdb
from envs.prompts import tokenize_prompts
from envs.textgen import TextGenEnv
from envs.textgen_vector import TextGenVectorEnv


def letter_score(texts: list[str]) -> list[float]:
    """A cheap deterministic reward: share of the letter 'e' (scaled)."""
    return [10.0 * t.count("e") / max(len(t), 1) for t in texts]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def texts(imdb_dir) -> list[str]:
    return [row["text"] for row in load_imdb("train", source=imdb_dir, limit=300, seed=1)]


@pytest.fixture
def kw(tiny_lm, tiny_tokenizer, texts) -> dict:
    return {"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": letter_score, "dataset": texts,
            "device": "cpu", "kl_coef": 0.3}


@torch.no_grad()
def ref_logprobs(model, prompt: list[int], actions: list[int]) -> np.ndarray:
    """log π_ref(a_t | prompt, a_<t) by one teacher-forced forward, (T,)."""
    seq = torch.tensor([prompt + actions])
    logp = model(seq).logits[0].double().log_softmax(-1)  # (len, V)
    pos = torch.arange(len(prompt) - 1, len(prompt) + len(actions) - 1)
    return logp[pos, torch.tensor(actions)].numpy()


def real_tokens(obs: dict, row: int | None = None) -> list[int]:
    ids, mask = (obs["input_ids"], obs["attention_mask"]) if row is None else (
        obs["input_ids"][row], obs["attention_mask"][row])
    return ids[mask.astype(bool)].tolist()


def test_check_env_and_spaces(kw, tiny_tokenizer) -> None:
    env = TextGenEnv(**kw)
    check_env(env, skip_render_check=True)
    V, L = len(tiny_tokenizer), 8 + 16
    assert env.action_space == gym.spaces.Discrete(V)
    assert env.observation_space["input_ids"].shape == (L,) and env.observation_space["input_ids"].high.max() == V - 1
    obs, info = env.reset(seed=3)
    assert 2 <= info["prompt_len"] <= 8 and info["new_tokens"] == 0
    mask = obs["attention_mask"]
    assert mask.sum() == info["prompt_len"] and (np.diff(mask) >= 0).all()  # left padded
    assert (obs["input_ids"][mask == 0] == tiny_tokenizer.pad_token_id).all()


def test_prompts_are_first_tokens_of_reviews(texts, tiny_tokenizer, kw) -> None:
    table, lengths = tokenize_prompts(texts, tiny_tokenizer, 8)
    full = tiny_tokenizer(texts, add_special_tokens=False)["input_ids"]
    for row, n, ids in zip(table, lengths, full):
        assert row[:n].tolist() == ids[:8]
    env = TextGenEnv(**kw)
    starts = {tuple(ids[:8]) for ids in full}
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        prompt = real_tokens(obs)
        assert any(s[: len(prompt)] == tuple(prompt) for s in starts)


def test_episode_rewards_decompose(kw, tiny_lm) -> None:
    """Per token: β·log π_ref(a_t|s_t) (teacher-forced, independent of the env's cache) + the score at the end."""
    env = TextGenEnv(**kw)
    rng = np.random.default_rng(0)
    for seed in range(4):
        obs, info = env.reset(seed=seed)
        prompt, actions, rewards = real_tokens(obs), [], []
        terminated = False
        while not terminated:
            action = int(rng.integers(env.action_space.n))
            obs, reward, terminated, truncated, info = env.step(action)
            actions.append(action)
            rewards.append(reward)
            assert not truncated and real_tokens(obs) == prompt + actions
        assert len(actions) == 16 and info["new_tokens"] == 16
        expected = 0.3 * ref_logprobs(tiny_lm, prompt, actions)
        expected[-1] += info["score"]
        np.testing.assert_allclose(rewards, expected, atol=1e-4)
        assert info["score"] == pytest.approx(letter_score([info["text"]])[0])
        assert info["ref_logprob"] == pytest.approx(expected[-1] / 0.3 - info["score"] / 0.3, abs=1e-4)


def test_eos_terminates_and_step_after_done_raises(kw, tiny_tokenizer) -> None:
    env = TextGenEnv(**kw)
    obs, _ = env.reset(seed=0)
    _, _, terminated, _, info = env.step(5)
    assert not terminated and info["new_tokens"] == 1 and "score" not in info
    _, reward, terminated, truncated, info = env.step(tiny_tokenizer.eos_token_id)
    assert terminated and not truncated and info["new_tokens"] == 2
    assert tiny_tokenizer.eos_token not in info["text"]  # scored text skips special tokens
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(5)
    with pytest.raises(RuntimeError, match="call reset"):
        TextGenEnv(**kw).step(5)


def test_determinism_by_seed(kw) -> None:
    def rollout(seed: int) -> tuple[list, list]:
        env = TextGenEnv(**kw)
        obs, _ = env.reset(seed=seed)
        seen, rewards = [real_tokens(obs)], []
        for _ in range(3):
            env.reset()
            for a in (11, 12, 13):
                obs, r, *_ = env.step(a)
                rewards.append(r)
            seen.append(real_tokens(obs))
        return seen, rewards

    assert rollout(7) == rollout(7)
    assert rollout(7)[0] != rollout(8)[0]


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


def test_registered_make_and_make_vec(kw) -> None:
    env = gym.make("TextGen-IMDB-v0", **kw)
    assert isinstance(env.unwrapped, TextGenEnv)
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=3, vectorization_mode="vector_entry_point", **kw)
    assert isinstance(venv, TextGenVectorEnv) and venv.num_envs == 3
    obs, info = venv.reset(seed=0)
    assert venv.observation_space.contains(obs) and info["_prompt_len"].all()
    again, _ = venv.reset(seed=0)
    np.testing.assert_array_equal(again["input_ids"], obs["input_ids"])
    assert not np.array_equal(venv.reset(seed=1)[0]["input_ids"], obs["input_ids"])


def test_dataset_path_and_render(kw, imdb_dir) -> None:
    env = TextGenEnv(render_mode="ansi", **{**kw, "dataset": imdb_dir})
    assert len(env.core.prompt_table) > 20000
    env.reset(seed=0)
    before = env.render()
    env.step(int(env.tokenizer.encode(" wow")[0]))
    assert env.render().startswith(before) and len(env.render()) > len(before)
    venv = TextGenVectorEnv(2, render_mode="ansi", **kw)
    venv.reset(seed=0)
    assert len(venv.render()) == 2


def test_action_errors(kw) -> None:
    env = TextGenEnv(**kw)
    env.reset(seed=0)
    V = env.action_space.n
    for bad in (V, -1, 1.5, np.array([1, 2])):
        with pytest.raises(ValueError, match="action must be an integer token id"):
            env.step(bad)
    venv = TextGenVectorEnv(3, **kw)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(3, np.int64))
    venv.reset(seed=0)
    for bad in (np.zeros(2, np.int64), np.zeros(3), np.array([0, 1, V])):
        with pytest.raises(ValueError, match="actions must be"):
            venv.step(bad)


def test_argument_errors(kw) -> None:
    cases = [
        ({"dataset": []}, "no review"),
        ({"dataset": ["ok"], "prompt_min_len": 3}, "no review"),
        ({"max_new_tokens": 250}, "exceeds the model context"),
        ({"kl_coef": -0.1}, "kl_coef"),
        ({"kl_coef": float("nan")}, "kl_coef"),
        ({"kl_coef": True}, "kl_coef"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"prompt_min_len": 0}, "prompt_min_len"),
        ({"prompt_min_len": 5, "prompt_max_len": 4}, "prompt_max_len"),
        ({"render_mode": "human"}, "render_mode"),
    ]
    for extra, match in cases:
        with pytest.raises(ValueError, match=match):
            TextGenEnv(**{**kw, **extra})


def test_nan_score_raises(kw) -> None:
    def nan_reward(texts: list[str]) -> list[float]:
        return [float("nan")] * len(texts)

    env = TextGenEnv(**{**kw, "reward_model": nan_reward, "max_new_tokens": 2})
    env.reset(seed=0)
    env.step(5)
    with pytest.raises(ValueError, match="'nan_reward' returned a NaN"):
        env.step(6)


def test_missing_hub_model_offline(kw, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="To run offline"):
        TextGenEnv(**{**kw, "model": "no-such-org/no-such-model", "tokenizer": None})


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
