"""TextGen envs pickle (reward functions are classes, not closures), so multiprocessing clients work: a copy
continues exactly as the original, and async vectorisation runs."""

from __future__ import annotations

import multiprocessing
import pickle

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401
from envs.rewards import make_reward_fn


@pytest.mark.parametrize("reward", ["callable", "vader"])
def test_a_pickled_env_continues_exactly_as_the_original(kw, reward):
    if reward == "vader":
        pytest.importorskip("vaderSentiment")
    env = gym.make("TextGen-IMDB-v0", **{**kw, "max_new_tokens": 3, **({"reward_model": "vader"} if reward == "vader"
                                                                        else {})})
    env.reset(seed=0)
    env.step(11)
    copy = pickle.loads(pickle.dumps(env))
    for a in (12, 13):  # the last one ends the episode: the score is computed by the unpickled reward function
        ours, theirs = env.step(a), copy.step(a)
        assert ours[1] == theirs[1] and ours[2] == theirs[2]
        np.testing.assert_array_equal(ours[0]["input_ids"], theirs[0]["input_ids"])
    assert ours[2] and ours[4]["score"] == theirs[4]["score"]
    assert pickle.loads(pickle.dumps(make_reward_fn(kw["reward_model"])))(["eee", "a"]).tolist() == \
        make_reward_fn(kw["reward_model"])(["eee", "a"]).tolist()


def test_async_vectorisation_matches_sync(kw):
    """gym.make_vec(..., vectorization_mode="async") (worker processes) gives the sync envs' rewards. Forked
    workers keep the test cheap (spawned ones re-import torch; what spawn needs, pickling, is tested above)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method on this platform")
    kwargs = {**kw, "max_new_tokens": 3}
    actions = np.array([[11, 12], [13, 14], [15, 16], [0, 0]])
    results = []
    for mode in ("sync", "async"):
        vector_kwargs = {"context": "fork"} if mode == "async" else {}
        venv = gym.make_vec("TextGen-IMDB-v0", num_envs=2, vectorization_mode=mode, vector_kwargs=vector_kwargs,
                            **kwargs)
        venv.reset(seed=0)
        results.append([venv.step(a)[1] for a in actions])
        venv.close()
    np.testing.assert_array_equal(results[0], results[1])
    assert np.abs(np.array(results[1])).sum() > 0
