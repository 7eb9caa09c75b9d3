"""Tests of envs.textgen: the single TextGen-IMDB-v0 env (spaces, prompts, rewards with KL shaping, EOS,
seeding, registration, rendering and errors)."""

from __future__ import annotations

import copy

import gymnasium as gym
import huggingface_hub
import numpy as np
import pytest
from env_helpers import letter_score, real_tokens, ref_logprobs
from gymnasium.utils.env_checker import check_env
from tokenizers import processors

import envs  # noqa: F401  (registers the envs)
from envs.prompts import adds_bos, tokenize_prompts
from envs.textgen import TextGenEnv
from envs.textgen_vector import TextGenVectorEnv

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_prompts_start_with_bos_where_the_tokenizer_adds_one(kw, tiny_tokenizer) -> None:
    """A Llama-style tokenizer (BOS first when encoding with special tokens): every episode starts with exactly one
    BOS, as ``tok(text)`` + ``generate()`` does; GPT-2-style tokenizers and ``add_bos=False`` get none."""
    bos = tiny_tokenizer.bos_token_id
    llama_like = copy.deepcopy(tiny_tokenizer)
    llama_like._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{llama_like.bos_token} $A", special_tokens=[(llama_like.bos_token, bos)])
    assert adds_bos(llama_like) and not adds_bos(tiny_tokenizer) and not adds_bos(llama_like, False)
    texts = [f"{tiny_tokenizer.bos_token}already rendered by a template", *kw["dataset"][:20]]
    table, lengths = tokenize_prompts(texts, llama_like, 8, add_bos=True)
    assert (table[:, 0] == bos).all() and (table[:, 1] != bos).all()  # one BOS, never two
    assert table[1, 1:lengths[1]].tolist() == llama_like(texts[1], add_special_tokens=False)["input_ids"][:7]
    env = TextGenVectorEnv(8, **(kw | {"tokenizer": llama_like}))
    obs, _ = env.reset(seed=0)
    first = obs["input_ids"][np.arange(8), np.argmax(obs["attention_mask"], 1)]
    assert (first == bos).all()
    plain, _ = TextGenVectorEnv(8, **(kw | {"tokenizer": llama_like}), add_bos=False).reset(seed=0)
    assert not (plain["input_ids"][np.arange(8), np.argmax(plain["attention_mask"], 1)] == bos).all()
    with pytest.raises(ValueError, match="add_bos"):
        adds_bos(llama_like, "yes")


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


def test_textgen_declares_render_fps():
    assert TextGenEnv.metadata["render_fps"] > 0 and TextGenVectorEnv.metadata["render_fps"] > 0
    assert gym.spec("TextGen-IMDB-v0") is not None
