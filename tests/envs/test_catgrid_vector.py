"""Tests of envs.catgrid_vector: the numpy-native vector CatGrid-v0 (dynamics against ``P``, NEXT_STEP autoreset,
episode statistics, seeding, rendering and errors)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers CatGrid-v0)
from envs.catgrid import CAT_COLOUR, CELL_PX
from envs.catgrid_tables import CELL_LETTERS, xy_to_state
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
    assert obs.tolist() == [[0, 0]] * 3 and info["prob"].tolist() == [1.0] * 3 and info["cell"].tolist() == [0] * 3
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


def test_native_info_has_the_sync_keys_and_their_values():
    """Same keys as gym.make_vec(..., "sync") (prob, numeric cell, with masks); prob is the P probability of the
    transition that happened, cell the code of the cell landed on."""
    native = gym.make_vec("CatGrid-v0", num_envs=16, vectorization_mode="vector_entry_point", map_name="8x8")
    sync = gym.make_vec("CatGrid-v0", num_envs=16, vectorization_mode="sync", map_name="8x8")
    base = native.unwrapped
    (obs, info), (_, sync_info) = native.reset(seed=0), sync.reset(seed=0)
    assert set(info) == set(sync_info) == {"prob", "_prob", "cell", "_cell"}
    rng = np.random.default_rng(0)
    for _ in range(30):
        s = xy_to_state(obs[:, 0], obs[:, 1], 8)
        a = rng.integers(0, 4, 16)
        obs, _, term, trunc, info = native.step(a)
        sync_info = sync.step(a)[4]
        assert set(info) == set(sync_info) and info["cell"].dtype.kind == sync_info["cell"].dtype.kind == "i"
        nxt = xy_to_state(obs[:, 0], obs[:, 1], 8)
        for i in range(16):
            if base.elapsed[i] == 0 and not (term[i] or trunc[i]):  # a reset step
                assert info["prob"][i] == 1.0
            else:
                assert info["prob"][i] == pytest.approx(sum(p for p, n, *_ in base.P[int(s[i])][int(a[i])]
                                                             if n == nxt[i]))
            assert CELL_LETTERS[info["cell"][i]] == base.tables.cells[nxt[i]]


def test_native_and_sync_draw_from_the_same_distribution():
    """The streams differ (one generator for all rows vs one per copy), the episode statistics do not."""
    stats = {}
    for mode in ("vector_entry_point", "sync"):
        env = gym.wrappers.vector.RecordEpisodeStatistics(
            gym.make_vec("CatGrid-v0", num_envs=32, vectorization_mode=mode, slip=0.5))
        env.reset(seed=0)
        rng, returns, lengths = np.random.default_rng(1), [], []
        for _ in range(300):
            info = env.step(rng.integers(0, 4, 32))[4]
            if "episode" in info:
                done = info["_episode"]
                returns += info["episode"]["r"][done].tolist()
                lengths += info["episode"]["l"][done].tolist()
        stats[mode] = np.array(returns), np.array(lengths)
    for k in (0, 1):
        a, b = stats["vector_entry_point"][k], stats["sync"][k]
        assert len(a) > 200 and len(b) > 200
        se = np.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) < 4 * se


def test_native_reset_takes_a_list_of_seeds():
    env = CatGridVectorEnv(num_envs=3, slip=0.5)
    draws = []
    for seed in ([0, 1, 2], [0, 1, 2], [0, 1, 3]):
        env.reset(seed=seed)
        draws.append(np.stack([env.step(np.full(3, RIGHT))[0] for _ in range(8)]))
    assert (draws[0] == draws[1]).all() and not (draws[0] == draws[2]).all()
    with pytest.raises(ValueError, match="list of 3 ints"):
        env.reset(seed=[0, 1])
