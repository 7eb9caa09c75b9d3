"""Tests of CatGrid-v0: single env, numpy-native vector env, transition table and value iteration."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers CatGrid-v0)
from envs.catgrid import (
    CAT_COLOUR,
    CELL_PX,
    MAPS,
    CatGridEnv,
    generate_random_map,
    meat_reachable,
    optimal_start_value,
    state_to_xy,
    value_iteration,
    xy_to_state,
)
from envs.catgrid_vector import CatGridVectorEnv

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


def greedy_path(env: CatGridEnv, policy: np.ndarray, max_len: int = 200) -> list[int]:
    """States visited when the greedy policy's moves always succeed (no slip)."""
    t, s, path = env.tables, env.tables.start, [env.tables.start]
    while not t.done[s] and len(path) < max_len:
        s = int(t.succ[s, policy[s]])
        path.append(s)
    return path


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
    assert obs.dtype == np.int64 and obs.tolist() == [0, 0] and info == {"prob": 1.0, "cell": "C"}
    obs[:] = 3  # returned arrays are fresh: mutating them does not move the cat
    obs2, _, _, _, info = env.step(UP)  # wall bump: stays, merged outcome has prob 1
    assert obs2.tolist() == [0, 0] and info == {"prob": 1.0, "cell": "C"}
    u = env.unwrapped
    assert u.to_state(np.array([3, 2])) == 13 == xy_to_state(3, 2, 5)
    assert u.to_xy(13).tolist() == [3, 2] and state_to_xy(13, 5) == (3, 2)


def test_step_rewards_info_and_absorbing_terminal() -> None:
    env = gym.make("CatGrid-v0", desc=["CBTM"], slip=0.0, terminal="MT")
    env.reset(seed=0)
    assert env.step(RIGHT)[1:] == (-1.0, False, False, {"prob": 1.0, "cell": "B"})
    assert env.step(RIGHT)[1:] == (-10.0, True, False, {"prob": 1.0, "cell": "T"})
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


def test_transition_table_rows_sum_to_one_and_merge() -> None:
    env = gym.make("CatGrid-v0", map_name="8x8", slip=0.3).unwrapped
    for s in range(64):
        for a in range(4):
            outcomes = env.P[s][a]
            assert sum(p for p, *_ in outcomes) == pytest.approx(1.0, abs=1e-12)
            assert len({n for _, n, _, _ in outcomes}) == len(outcomes)  # merged
    assert env.P[0][UP] == [(1.0, 0, 0.0, False)]  # wall bump + slip merged
    assert env.P[0][RIGHT] == [(pytest.approx(0.7), 1, 0.0, False), (pytest.approx(0.3), 0, 0.0, False)]
    assert env.P[1][RIGHT] == [(pytest.approx(0.7), 2, -1.0, False), (pytest.approx(0.3), 1, 0.0, False)]
    assert env.P[63][LEFT] == [(1.0, 63, 0.0, True)]  # terminal bathtub cell is absorbing


@pytest.mark.parametrize("slip,gamma", [(0.0, 0.9), (0.2, 0.99), (0.5, 0.95)])
def test_value_iteration_closed_forms(slip: float, gamma: float) -> None:
    s, g = slip, gamma
    # ["CM"]: V(C) = (1-s)*100 + s*g*V(C)            =>  V(C) = 100 (1-s) / (1 - s g)
    v, pi = value_iteration(gym.make("CatGrid-v0", desc=["CM"], slip=s).unwrapped.P, gamma=g)
    v_c = 100 * (1 - s) / (1 - s * g)
    np.testing.assert_allclose(v, [v_c, 0.0], atol=1e-7)
    assert pi[0] == RIGHT
    # ["C.M"]: V(.) = 100 (1-s) / (1 - s g);  V(C) = (1-s) g V(.) + s g V(C) => V(C) = (1-s) g V(.) / (1 - s g)
    v, _ = value_iteration(gym.make("CatGrid-v0", desc=["C.M"], slip=s).unwrapped.P, gamma=g)
    v_e = 100 * (1 - s) / (1 - s * g)
    np.testing.assert_allclose(v, [(1 - s) * g * v_e / (1 - s * g), v_e, 0.0], atol=1e-7)
    # ["CBM"]: slipping on the broom costs -1 again:
    # V(B) = (1-s) 100 + s (-1 + g V(B))  => V(B) = (100 (1-s) - s) / (1 - s g)
    # V(C) = (1-s)(-1 + g V(B)) + s g V(C) => V(C) = (1-s)(-1 + g V(B)) / (1 - s g)
    v, _ = value_iteration(gym.make("CatGrid-v0", desc=["CBM"], slip=s).unwrapped.P, gamma=g)
    v_b = (100 * (1 - s) - s) / (1 - s * g)
    np.testing.assert_allclose(v, [(1 - s) * (-1 + g * v_b) / (1 - s * g), v_b, 0.0], atol=1e-7)


@pytest.mark.parametrize("map_name", ["5x5", "8x8"])
def test_named_maps_have_finite_optimum_reaching_meat(map_name: str) -> None:
    env = gym.make("CatGrid-v0", map_name=map_name).unwrapped
    v, pi = env.optimal_values(gamma=0.99)
    assert np.all(np.isfinite(v)) and 50.0 < v[env.start_state] < 100.0
    path = greedy_path(env, pi)
    assert env.tables.cells[path[-1]] == "M"
    assert not set(env.tables.cells[path]) & {"T"}
    assert optimal_start_value({"map_name": map_name}, gamma=0.99) == pytest.approx(v[env.start_state])
    assert optimal_start_value(gym.make("CatGrid-v0", map_name=map_name), 0.99) == pytest.approx(v[0])


def test_5x5_optimum_trades_a_broom_for_a_shorter_path() -> None:
    env = gym.make("CatGrid-v0").unwrapped
    path = greedy_path(env, env.optimal_values(gamma=0.99)[1])
    # 5 moves over one broom beat the 7-move broom-free detour: -0.99^3 + 100·0.99^4 > 100·0.99^6 (slip aside)
    assert len(path) - 1 == 5 and list(env.tables.cells[path]).count("B") == 1
    assert meat_reachable(MAPS["5x5"]) and not meat_reachable(MAPS["5x5"], avoid="TB.")


def test_8x8_optimum_threads_between_hazards() -> None:
    env = gym.make("CatGrid-v0", map_name="8x8").unwrapped
    path = greedy_path(env, env.optimal_values(gamma=0.99)[1])
    cells = list(env.tables.cells[path])
    assert len(path) - 1 == 8 and cells[-1] == "M" and "B" not in cells and "T" not in cells


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


def test_vector_tables_give_identical_optimum() -> None:
    vec = gym.make_vec("CatGrid-v0", num_envs=4, vectorization_mode="vector_entry_point", map_name="8x8")
    single = gym.make("CatGrid-v0", map_name="8x8").unwrapped
    v_vec, pi_vec = vec.unwrapped.optimal_values(0.99)
    v_single, pi_single = single.optimal_values(0.99)
    np.testing.assert_array_equal(v_vec, v_single)
    np.testing.assert_array_equal(pi_vec, pi_single)
    assert optimal_start_value(vec, 0.99) == v_single[0]


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


def test_random_map_reachable_and_seeded() -> None:
    for seed in range(20):
        desc = generate_random_map(size=8, p_broom=0.2, p_bath=0.15, seed=seed)
        assert len(desc) == 8 and all(len(row) == 8 for row in desc)
        assert desc[0][0] == "C" and desc[-1][-1] == "M"
        # independent check: with no slip and every hazard terminal, the optimum reaches the meat
        env = gym.make("CatGrid-v0", desc=desc, slip=0.0, terminal="MTB").unwrapped
        _, pi = env.optimal_values(0.9)
        assert env.tables.cells[greedy_path(env, pi)[-1]] == "M"
    assert generate_random_map(seed=3) == generate_random_map(seed=3)
    assert generate_random_map(seed=3) != generate_random_map(seed=4)
    assert len(generate_random_map(size=12, seed=0)) == 12


def test_vector_env_seeded_determinism() -> None:
    def rollout(seed: int) -> np.ndarray:
        vec = CatGridVectorEnv(num_envs=8, max_episode_steps=20, map_name="8x8")
        acts = np.random.default_rng(1).integers(0, 4, size=(60, 8))
        obs = [vec.reset(seed=seed)[0]] + [vec.step(a)[0] for a in acts]
        return np.stack(obs)  # (T, N, 2)

    np.testing.assert_array_equal(rollout(5), rollout(5))
    assert not np.array_equal(rollout(5), rollout(6))


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
        (lambda: generate_random_map(size=1), ValueError, "size must be an int >= 2"),
        (lambda: generate_random_map(p_broom=0.6, p_bath=0.5), ValueError, "p_broom \\+ p_bath < 1"),
        (lambda: generate_random_map(p_broom=-0.1), ValueError, "p_broom >= 0"),
        (lambda: CatGridVectorEnv(num_envs=0), ValueError, "num_envs must be a positive int"),
        (lambda: CatGridVectorEnv(max_episode_steps=0), ValueError, "max_episode_steps must be a positive"),
        (lambda: value_iteration(CatGridEnv().P, gamma=1.0), ValueError, r"gamma must be in \[0, 1\)"),
        (lambda: value_iteration({0: {0: [(0.5, 0, 0.0, False)]}}), ValueError, "sum to 0.5, not 1"),
    ],
)
def test_other_bad_inputs(call, error: type, match: str) -> None:
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
