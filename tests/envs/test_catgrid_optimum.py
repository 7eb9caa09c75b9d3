"""Tests of envs.catgrid_optimum: value iteration against closed forms, the optima of the named maps, and the
start values of single and vector envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from env_helpers import greedy_path

import envs  # noqa: F401  (registers CatGrid-v0)
from envs.catgrid import CatGridEnv
from envs.catgrid_optimum import optimal_start_value, value_iteration

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


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


def test_8x8_optimum_threads_between_hazards() -> None:
    env = gym.make("CatGrid-v0", map_name="8x8").unwrapped
    path = greedy_path(env, env.optimal_values(gamma=0.99)[1])
    cells = list(env.tables.cells[path])
    assert len(path) - 1 == 8 and cells[-1] == "M" and "B" not in cells and "T" not in cells


def test_vector_tables_give_identical_optimum() -> None:
    vec = gym.make_vec("CatGrid-v0", num_envs=4, vectorization_mode="vector_entry_point", map_name="8x8")
    single = gym.make("CatGrid-v0", map_name="8x8").unwrapped
    v_vec, pi_vec = vec.unwrapped.optimal_values(0.99)
    v_single, pi_single = single.optimal_values(0.99)
    np.testing.assert_array_equal(v_vec, v_single)
    np.testing.assert_array_equal(pi_vec, pi_single)
    assert optimal_start_value(vec, 0.99) == v_single[0]


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: value_iteration(CatGridEnv().P, gamma=1.0), ValueError, r"gamma must be in \[0, 1\)"),
        (lambda: value_iteration({0: {0: [(0.5, 0, 0.0, False)]}}), ValueError, "sum to 0.5, not 1"),
    ],
)
def test_bad_value_iteration_inputs(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()
