"""Tests of envs.catgrid_tables: the transition table ``P``, map reachability and the random map generator."""

from __future__ import annotations

import gymnasium as gym
import pytest
from env_helpers import greedy_path

import envs  # noqa: F401  (registers CatGrid-v0)
from envs.catgrid_tables import MAPS, generate_random_map, meat_reachable

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


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


def test_meat_reachable() -> None:
    assert meat_reachable(MAPS["5x5"]) and not meat_reachable(MAPS["5x5"], avoid="TB.")


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


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: generate_random_map(size=1), ValueError, "size must be an int >= 2"),
        (lambda: generate_random_map(p_broom=0.6, p_bath=0.5), ValueError, "p_broom \\+ p_bath < 1"),
        (lambda: generate_random_map(p_broom=-0.1), ValueError, "p_broom >= 0"),
    ],
)
def test_bad_random_map_arguments(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()
