"""Tests of envs.catgrid: the single CatGrid-v0 env (spaces, steps, rendering, seeding, time limit, errors)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers CatGrid-v0)
from envs.catgrid import CAT_COLOUR, CELL_PX, CatGridEnv
from envs.catgrid_tables import CELL_LETTERS, state_to_xy, xy_to_state
from envs.catgrid_vector import CatGridVectorEnv

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


@pytest.mark.parametrize("render_mode", [None, "ansi", "rgb_array"])
@pytest.mark.parametrize("map_name", ["5x5", "8x8"])
def test_check_env_passes_without_warnings(render_mode: str | None, map_name: str) -> None:
    env = gym.make("CatGrid-v0", render_mode=render_mode, map_name=map_name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_spaces_reset_and_info() -> None:
    env = gym.make("CatGrid-v0")
    assert env.observation_space == gym.spaces.MultiDiscrete([5, 5], dtype=np.int64)
    assert env.action_space == gym.spaces.Discrete(4)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.int64 and obs.tolist() == [0, 0] and info == {"prob": 1.0, "cell": CELL_LETTERS.index("C")}
    obs[:] = 3  # returned arrays are fresh: mutating them does not move the cat
    obs2, _, _, _, info = env.step(UP)  # wall bump: stays, merged outcome has prob 1
    assert obs2.tolist() == [0, 0] and info == {"prob": 1.0, "cell": CELL_LETTERS.index("C")}
    u = env.unwrapped
    assert u.to_state(np.array([3, 2])) == 13 == xy_to_state(3, 2, 5)
    assert u.to_xy(13).tolist() == [3, 2] and state_to_xy(13, 5) == (3, 2)


def test_step_rewards_info_and_absorbing_terminal() -> None:
    env = gym.make("CatGrid-v0", desc=["CBTM"], slip=0.0, terminal="MT")
    env.reset(seed=0)
    assert env.step(RIGHT)[1:] == (-1.0, False, False, {"prob": 1.0, "cell": CELL_LETTERS.index("B")})
    assert env.step(RIGHT)[1:] == (-10.0, True, False, {"prob": 1.0, "cell": CELL_LETTERS.index("T")})
    obs, reward, term, _, _ = env.step(RIGHT)  # after the end: stays, reward 0
    assert obs.tolist() == [2, 0] and reward == 0.0 and term
    env = gym.make("CatGrid-v0", desc=["CBTM"], slip=0.0, terminal="M")
    env.reset(seed=0)
    rewards = [env.step(RIGHT)[1] for _ in range(3)]
    assert rewards == [-1.0, -10.0, 100.0]


def test_render_shows_the_cat() -> None:
    env = gym.make("CatGrid-v0", render_mode="rgb_array", slip=0.0)
    env.reset(seed=0)
    env.step(RIGHT)  # cat at (1, 0)
    img = env.render()
    assert img.shape == (5 * CELL_PX, 5 * CELL_PX, 3) and img.dtype == np.uint8
    cat = np.all(img == CAT_COLOUR, axis=-1)  # (H, W)
    ys, xs = np.nonzero(cat)
    assert cat.sum() > 0.25 * CELL_PX**2
    assert set(xs // CELL_PX) == {1} and set(ys // CELL_PX) == {0}
    ansi = gym.make("CatGrid-v0", render_mode="ansi", slip=0.0)
    ansi.reset(seed=0)
    ansi.step(DOWN)
    text = ansi.render()
    assert text.startswith("  (Down)\n")
    assert text.splitlines()[2].startswith("\x1b[41m.")  # row 1, cell (0, 1) highlighted


def test_same_seed_same_trajectory() -> None:
    def rollout(seed: int) -> list[tuple]:
        env = gym.make("CatGrid-v0", map_name="8x8")
        actions = np.random.default_rng(0).integers(0, 4, size=300)
        out, (obs, _) = [], env.reset(seed=seed)
        for a in actions:
            obs, r, term, trunc, _ = env.step(a)
            out.append((tuple(obs), r, term, trunc))
            if term or trunc:
                obs, _ = env.reset()
        return out

    assert rollout(7) == rollout(7)
    assert rollout(7) != rollout(8)


def test_truncation_at_50_for_make_and_make_vec() -> None:
    env = gym.make("CatGrid-v0")  # UP from the top-left start bumps the wall forever
    env.reset(seed=0)
    truncs = [env.step(UP)[3] for _ in range(50)]
    assert truncs == [False] * 49 + [True]
    vec = gym.make_vec("CatGrid-v0", num_envs=1024, vectorization_mode="vector_entry_point")
    assert isinstance(vec.unwrapped, CatGridVectorEnv) and vec.unwrapped.max_episode_steps == 50
    vec.reset(seed=0)
    ups = np.zeros(1024, dtype=np.int64)
    for step in range(1, 51):
        _, _, term, trunc, _ = vec.step(ups)
        assert not term.any() and trunc.all() == (step == 50) and trunc.any() == (step == 50)
    _, r, term, trunc, _ = vec.step(ups)  # autoreset step
    assert not trunc.any() and not term.any() and not r.any()


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"desc": []}, ValueError, "desc is empty"),
        ({"desc": [""]}, ValueError, "desc is empty"),
        ({"desc": ["..M"]}, ValueError, "exactly one start cell 'C', found 0"),
        ({"desc": ["CCM"]}, ValueError, "exactly one start cell 'C', found 2"),
        ({"desc": ["C.."]}, ValueError, "no meat cell 'M'"),
        ({"desc": ["C.M", ".."]}, ValueError, "ragged map: row 1 has 2 cells"),
        ({"desc": ["C.X", "..M"]}, ValueError, r"unknown cell letter 'X' at \(x=2, y=0\)"),
        ({"desc": "C.M"}, TypeError, "desc must be a list of strings"),
        ({"desc": [["C", "M"]]}, TypeError, "every row of desc must be a str"),
        ({"slip": 1.0}, ValueError, r"slip must be in \[0, 1\)"),
        ({"slip": -0.1}, ValueError, r"slip must be in \[0, 1\)"),
        ({"slip": "0.2"}, TypeError, "slip must be a float"),
        ({"terminal": "T"}, ValueError, "must be a subset of 'MTB' that contains 'M'"),
        ({"terminal": "MX"}, ValueError, "must be a subset of 'MTB' that contains 'M'"),
        ({"terminal": None}, TypeError, "terminal must be a string"),
        ({"map_name": "4x4"}, ValueError, "unknown map_name '4x4'"),
        ({"render_mode": "human"}, ValueError, "render_mode must be None or one of"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        CatGridEnv(**kwargs)
    with pytest.raises(error, match=match):
        CatGridVectorEnv(num_envs=2, **kwargs)


@pytest.mark.parametrize(
    "action,error,match",
    [
        (4, ValueError, r"action must be in \{0, 1, 2, 3\}"),
        (-1, ValueError, r"action must be in \{0, 1, 2, 3\}"),
        (1.0, TypeError, "action must be an integer"),
        (True, TypeError, "action must be an integer"),
        (np.array([1]), TypeError, "action must be an integer"),
        (np.float32(2), TypeError, "action must be an integer"),
    ],
)
def test_bad_single_actions(action: object, error: type, match: str) -> None:
    env = CatGridEnv()
    env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(action)
    for ok in (np.int32(1), np.array(3), np.uint8(0), 2):  # every integer type is accepted
        assert env.observation_space.contains(env.step(ok)[0])
