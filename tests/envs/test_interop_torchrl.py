"""TorchRL's GymWrapper on both native vector envs: it reads the ``autoreset_mode`` attribute and accepts
SAME_STEP and DISABLED (resetting finished rows through ``reset(options={"reset_mask": ...})``)."""

from __future__ import annotations

import multiprocessing

import gymnasium as gym
import pytest

import envs  # noqa: F401

_START_METHOD = multiprocessing.get_start_method(allow_none=True)
pytest.importorskip("torchrl")
multiprocessing.set_start_method(_START_METHOD, force=True)  # importing torchrl sets "spawn" for the whole process
from torchrl.envs import GymWrapper  # noqa: E402
from torchrl.envs.utils import check_env_specs  # noqa: E402


def rollout_checks(venv: gym.vector.VectorEnv, steps: int) -> int:
    """``check_env_specs`` passes and a rollout across episode ends runs; returns the number of ended episodes."""
    env = GymWrapper(venv)
    check_env_specs(env, seed=0)
    td = env.rollout(steps, break_when_any_done=False)
    assert td.shape == (venv.num_envs, steps)
    return int(td["next", "done"].sum())


@pytest.mark.parametrize("mode", ["Disabled", "SameStep"])
def test_torchrl_wraps_native_catgrid(mode):
    venv = gym.make_vec("CatGrid-v0", num_envs=4, vectorization_mode="vector_entry_point", autoreset_mode=mode)
    assert rollout_checks(venv, 60) >= 4  # every row was truncated at 50 steps at least, and went on


@pytest.mark.parametrize("mode", ["Disabled", "SameStep"])
def test_torchrl_wraps_native_textgen(kw, mode):
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=3, vectorization_mode="vector_entry_point", autoreset_mode=mode,
                        **{**kw, "max_new_tokens": (2, 4), "prompt_max_len": 4})
    assert rollout_checks(venv, 10) >= 6  # rows ended (2-4 tokens each) and restarted


def test_torchrl_refuses_the_default_next_step_mode():
    with pytest.raises(RuntimeError, match="SAME_STEP or DISABLED"):
        GymWrapper(gym.make_vec("CatGrid-v0", num_envs=2, vectorization_mode="vector_entry_point"))
