"""Envs fail safely: a raising reward callable leaves the env as before the step, reward callables
and reward models are checked for what they are, step-before-reset raises, render_fps declared."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the envs)
from envs.catgrid_vector import CatGridVectorEnv
from envs.imdb import load_imdb
from envs.rewards import make_reward_fn
from envs.textgen import TextGenEnv
from envs.textgen_vector import TextGenVectorEnv

pytestmark = pytest.mark.usefixtures("one_thread")


class Flaky:
    """A reward callable that raises on chosen calls (1-based), else scores the letter 'e'."""

    def __init__(self, fail_on: set[int]) -> None:
        self.calls, self.fail_on = 0, fail_on

    def __call__(self, texts: list[str]) -> list[float]:
        self.calls += 1
        if self.calls in self.fail_on:
            raise ConnectionError("reward server down")
        return [t.count("e") / 10.0 for t in texts]


@pytest.fixture(scope="module")
def texts(imdb_dir) -> list[str]:
    return [row["text"] for row in load_imdb("train", source=imdb_dir, limit=100, seed=2)]


def kw(tiny_lm, tiny_tokenizer, texts, reward) -> dict:
    return {"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": reward, "dataset": texts,
            "device": "cpu", "kl_coef": 0.2, "max_new_tokens": 3}


def test_single_env_step_is_rolled_back_when_the_reward_raises(tiny_lm, tiny_tokenizer, texts):
    env = TextGenEnv(**kw(tiny_lm, tiny_tokenizer, texts, Flaky({1})))
    clean = TextGenEnv(**kw(tiny_lm, tiny_tokenizer, texts, Flaky(set())))
    obs, _ = env.reset(seed=0)
    clean.reset(seed=0)
    a = 100  # a token that is not EOS
    for _ in range(2):
        env.step(a)
        clean.step(a)
    before = {k: v.copy() for k, v in env.core.get_state().items() if isinstance(v, np.ndarray)}
    with pytest.raises(ConnectionError, match="reward server down") as err:
        env.step(a)  # the 3rd token ends the episode: scoring fails
    assert any("rolled back" in note for note in getattr(err.value, "__notes__", []))
    for k, v in env.core.get_state().items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, before[k], err_msg=k)
    obs, r, term, trunc, info = env.step(a)  # retry: the same 3-token episode, same reward as a clean env
    obs2, r2, term2, _, info2 = clean.step(a)
    assert term and term2 and info["new_tokens"] == 3 == info2["new_tokens"]
    assert r == pytest.approx(r2, abs=1e-5) and info["text"] == info2["text"]
    np.testing.assert_array_equal(obs["input_ids"], obs2["input_ids"])


def test_vector_env_step_is_rolled_back_when_the_reward_raises(tiny_lm, tiny_tokenizer, texts):
    env = TextGenVectorEnv(4, **kw(tiny_lm, tiny_tokenizer, texts, Flaky({1})))
    clean = TextGenVectorEnv(4, **kw(tiny_lm, tiny_tokenizer, texts, Flaky(set())))
    env.reset(seed=5)
    clean.reset(seed=5)
    acts = np.full(4, 100)
    for _ in range(2):
        env.step(acts)
        clean.step(acts)
    rng_before = env.np_random.bit_generator.state
    with pytest.raises(ConnectionError):
        env.step(acts)
    assert env.np_random.bit_generator.state == rng_before
    for _ in range(3):  # then it continues exactly like a clean env (autoreset with the same prompts)
        o, r, t, _, i = env.step(acts)
        o2, r2, t2, _, i2 = clean.step(acts)
        np.testing.assert_array_equal(o["input_ids"], o2["input_ids"])
        np.testing.assert_array_equal(t, t2)
        np.testing.assert_allclose(r, r2, atol=1e-5)
        assert (i["new_tokens"] <= 3).all()


@pytest.mark.parametrize(("result", "shown"), [
    ("0.5", "str"), ([True, False], "bool"), ({"a": 1.0}, "dict"), (None, "NoneType"),
    ((x for x in [1.0, 2.0]), "generator"), ([1 + 2j, 0j], "complex"), (True, "bool"), (["a", "b"], "str"),
])
def test_reward_callable_results_are_checked(result, shown):
    def my_reward(texts):
        return result

    fn = make_reward_fn(my_reward)
    with pytest.raises(TypeError, match=rf"Reward function 'my_reward' returned .*{shown}.*2 real numbers"):
        fn(["a", "b"])


def test_reward_callable_good_results_pass():
    for result in ([1, 2], (1.0, 2), np.array([1.0, 2.0], dtype=np.float32), torch.tensor([1.0, 2.0])):
        np.testing.assert_array_equal(make_reward_fn(lambda t, r=result: r)(["a", "b"]), [1.0, 2.0])


def test_causal_lm_dir_is_not_a_reward_model(tiny_lm_dir, tiny_lm, tiny_tokenizer):
    with pytest.raises(ValueError, match=rf"{tiny_lm_dir}.*not a trained sequence-classification.*Accepted reward"):
        make_reward_fn(str(tiny_lm_dir), device="cpu")
    with pytest.raises(ValueError, match="GPT2LMHeadModel, not a sequence classifier"):
        make_reward_fn(tiny_lm, tokenizer=tiny_tokenizer, device="cpu")


def test_reward_model_dir_written_by_the_trainer_is_accepted(tmp_path, tiny_tokenizer):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from runners.common.tiny_lm import save_pretrained_atomic

    config = GPT2Config(vocab_size=len(tiny_tokenizer), n_layer=1, n_head=2, n_embd=32, n_positions=64,
                        num_labels=1, pad_token_id=tiny_tokenizer.pad_token_id or 0)
    save_pretrained_atomic(GPT2ForSequenceClassification(config), tiny_tokenizer, tmp_path / "rm")
    assert make_reward_fn(str(tmp_path / "rm"), device="cpu")(["good movie"]).shape == (1,)


def test_catgrid_vector_step_before_reset_raises():
    env = CatGridVectorEnv(num_envs=2)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(2, dtype=np.int64))
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.int64))


def test_textgen_declares_render_fps():
    assert TextGenEnv.metadata["render_fps"] > 0 and TextGenVectorEnv.metadata["render_fps"] > 0
    assert gym.spec("TextGen-IMDB-v0") is not None
