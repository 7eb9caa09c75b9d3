"""Tests of envs.catgrid_vector: the numpy-native vector CatGrid-v0 (dynamics against ``P``, NEXT_STEP autoreset,
episode statistics, seeding, rendering and errors)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers CatGrid-v0)
from envs.catgrid import CAT_COLOUR, CELL_PX
from envs.catgrid_tables import xy_to_state
from envs.catgrid_vector import CatGridVectorEnv

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


def test_vector_env_transition_frequencies_match_P() -> None:
    vec = CatGridVectorEnv(num_envs=40_000, map_name="8x8", slip=0.3)
    vec.reset(seed=123)
    P = vec.P
    for s, a in [(0, UP), (0, RIGHT), (1, RIGHT), (22, UP), (35, RIGHT)]:  # wall, move, broom, bath, meat
        vec.reset()
        vec.states[:] = s
        obs, rewards, term, _, _ = vec.step(np.full(vec.num_envs, a))
        nxt = xy_to_state(obs[:, 0], obs[:, 1], 8)
        for p, n, r, d in P[s][a]:
            hit = nxt == n
            assert hit.mean() == pytest.approx(p, abs=0.01), (s, a, n)
            assert np.all(rewards[hit] == r) and np.all(term[hit] == d)
        assert sum(p for p, *_ in P[s][a]) == pytest.approx(1.0)


def test_vector_next_step_autoreset() -> None:
    vec = CatGridVectorEnv(num_envs=3, desc=["C.M"], slip=0.0)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, info = vec.reset(seed=0)
    assert obs.tolist() == [[0, 0]] * 3 and info == {}
    obs[:] = 1  # fresh arrays: the env's tables are untouched
    assert vec.tables.xy[0].tolist() == [0, 0]
    right = np.array([RIGHT, RIGHT, LEFT])
    vec.step(right)
    obs, r, term, trunc, _ = vec.step(right)
    assert obs.tolist() == [[2, 0], [2, 0], [0, 0]] and r.tolist() == [100, 100, 0]
    assert term.tolist() == [True, True, False] and not trunc.any()
    obs, r, term, trunc, _ = vec.step(right)  # rows 0, 1 are reset; their actions are ignored
    assert obs.tolist() == [[0, 0], [0, 0], [0, 0]] and r.tolist() == [0, 0, 0]
    assert not term.any() and not trunc.any()
    obs, r, *_ = vec.step(right)
    assert obs.tolist() == [[1, 0], [1, 0], [0, 0]]


def test_record_episode_statistics_on_vector_env() -> None:
    vec = gym.wrappers.vector.RecordEpisodeStatistics(CatGridVectorEnv(num_envs=2, desc=["CBM"], slip=0.0))
    vec.reset(seed=0)
    vec.step(np.array([RIGHT, RIGHT]))
    *_, info = vec.step(np.array([RIGHT, RIGHT]))
    assert info["_episode"].tolist() == [True, True]
    assert info["episode"]["r"].tolist() == [99.0, 99.0] and info["episode"]["l"].tolist() == [2, 2]


def test_vector_env_seeded_determinism() -> None:
    def rollout(seed: int) -> np.ndarray:
        vec = CatGridVectorEnv(num_envs=8, max_episode_steps=20, map_name="8x8")
        acts = np.random.default_rng(1).integers(0, 4, size=(60, 8))
        obs = [vec.reset(seed=seed)[0]] + [vec.step(a)[0] for a in acts]
        return np.stack(obs)  # (T, N, 2)

    np.testing.assert_array_equal(rollout(5), rollout(5))
    assert not np.array_equal(rollout(5), rollout(6))


@pytest.mark.parametrize(
    "actions,error,match",
    [
        (np.array([0, 1, 2]), ValueError, r"actions must have shape \(2,\)"),
        (np.array([[0, 1]]), ValueError, r"actions must have shape \(2,\)"),
        (np.array([0.0, 1.0]), TypeError, "actions must be an integer array"),
        (np.array([True, False]), TypeError, "actions must be an integer array"),
        (np.array([0, 4]), ValueError, r"actions must be in \{0, 1, 2, 3\}"),
        (np.array([-1, 0]), ValueError, r"actions must be in \{0, 1, 2, 3\}"),
    ],
)
def test_bad_vector_actions(actions: np.ndarray, error: type, match: str) -> None:
    vec = CatGridVectorEnv(num_envs=2)
    vec.reset(seed=0)
    with pytest.raises(error, match=match):
        vec.step(actions)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: CatGridVectorEnv(num_envs=0), ValueError, "num_envs must be a positive int"),
        (lambda: CatGridVectorEnv(max_episode_steps=0), ValueError, "max_episode_steps must be a positive"),
    ],
)
def test_bad_vector_arguments(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_vector_render_and_reset_mask() -> None:
    vec = CatGridVectorEnv(num_envs=3, render_mode="rgb_array", desc=["C.M"], slip=0.0)
    vec.reset(seed=0)
    vec.step(np.array([RIGHT, LEFT, LEFT]))
    frames = vec.render()
    assert len(frames) == 3 and frames[0].shape == (CELL_PX, 3 * CELL_PX, 3)
    cat_cols = [set(np.nonzero(np.all(f == CAT_COLOUR, axis=-1))[1] // CELL_PX) for f in frames]
    assert cat_cols == [{1}, {0}, {0}]
    obs, _ = vec.reset(options={"reset_mask": np.array([True, False, False])})
    assert obs.tolist() == [[0, 0], [0, 0], [0, 0]]
    with pytest.raises(ValueError, match="reset_mask"):
        vec.reset(options={"reset_mask": np.array([1, 0, 0])})


def test_catgrid_vector_step_before_reset_raises():
    env = CatGridVectorEnv(num_envs=2)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(2, dtype=np.int64))
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.int64))
