"""Tests of envs.textgen_core: a step fails safely. A raising reward callable leaves the env (single or vector)
as before the step, with its random stream, and the retried step equals a clean env's."""

from __future__ import annotations

import numpy as np
import pytest

from envs.imdb import load_imdb
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
