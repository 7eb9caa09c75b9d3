"""Tests of envs.catgrid_turns (CatGrid-v0 in words) and envs.transcripts (legal play for SFT)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers CatGrid-v0)
from envs.catgrid_optimum import finite_horizon_values, optimal_start_return
from envs.catgrid_tables import CELL_LETTERS, build_transition_table, make_tables
from envs.catgrid_turns import MOVE_WORDS, NO_MOVE, CatGridTurnEnv, catgrid_move_policy, parse_move, turn_table
from envs.transcripts import play_transcripts, transcript_text, write_transcripts
from envs.turns import TurnEnv


@pytest.mark.parametrize(("text", "move"), [
    ("up", 0), ("Down.", 1), (" I go LEFT now", 2), ("\\boxed{right}", 3), ("right, then up", 3),
    ("upper", NO_MOVE), ("uphill downright", NO_MOVE), ("", NO_MOVE), ("north", NO_MOVE), ("go\nup", 0),
])
def test_parse_move(text: str, move: int) -> None:
    assert parse_move(text) == move


def test_text_of_the_start_and_a_move() -> None:
    env = CatGridTurnEnv(slip=0.0)
    assert isinstance(env, TurnEnv)
    text, info = env.reset(seed=0)
    assert text == "at 0,0 up # down . left # right ." and info == {"prob": 1.0, "cell": 0, "move": -1, "turn": 0}
    text, r, term, trunc, info = env.step("right")
    assert (text, r, term, trunc) == ("at 1,0 up # down . left C right .", 0.0, False, False)
    assert info == {"prob": 1.0, "cell": CELL_LETTERS.index("."), "move": 3, "turn": 1}
    text, r, *_ = env.step("right right")  # (2, 0): the broom at (3, 0) is the right neighbour
    assert text == "at 2,0 up # down T left . right B" and r == 0.0


@pytest.mark.parametrize("map_name", ["5x5", "8x8"])
def test_same_seed_same_moves_same_trajectory_as_catgrid(map_name: str) -> None:
    """Identical random draws: every reward, flag, position and info equals CatGrid-v0's (time limit included)."""
    ref, env = gym.make("CatGrid-v0", map_name=map_name), CatGridTurnEnv(map_name=map_name)
    rng, lengths, slips = np.random.default_rng(0), [], 0
    for ep in range(40):
        obs, _ = ref.reset(seed=ep)
        env.reset(seed=ep)
        for turn in range(1, 100):
            a = int(rng.integers(4))
            obs, r, term, trunc, info = ref.step(a)
            text, r2, term2, trunc2, info2 = env.step(MOVE_WORDS[a])
            assert (r2, term2, trunc2) == (r, term, trunc)
            assert text.startswith(f"at {obs[0]},{obs[1]} ") and info2 == info | {"move": a, "turn": turn}
            slips += info["prob"] < 0.5
            if term or trunc:
                lengths.append(turn)
                break
    assert 50 in lengths and min(lengths) < 50 and slips > 0  # truncations, terminations and slips all happened


def test_slip_frequency_matches_catgrid_table() -> None:
    env = CatGridTurnEnv(desc=["C.M"], slip=0.3)
    stayed = 0
    for ep in range(2000):
        env.reset(seed=ep)
        text, *_ = env.step("right")
        stayed += text.startswith("at 0,0 ")
    p = build_transition_table(env.tables)[0][3]
    assert dict((n, q) for q, n, _, _ in p) == pytest.approx({1: 0.7, 0: 0.3})
    assert abs(stayed / 2000 - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 2000)


def test_turn_naming_no_move_stays_pays_the_penalty_and_draws_nothing() -> None:
    env = CatGridTurnEnv(max_turns=3, invalid_penalty=-2.5)
    env.reset(seed=1)
    env.step("down")
    state_before, rng_before = env.state, env.np_random.bit_generator.state
    text, r, term, trunc, info = env.step("I'd rather sleep")
    assert (r, term, trunc, info["move"], info["turn"]) == (-2.5, False, False, NO_MOVE, 2)
    assert env.state == state_before and env.np_random.bit_generator.state == rng_before
    *_, trunc, _ = env.step("zzz")  # the no-move turn counts towards the time limit
    assert trunc
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("up")


@pytest.mark.parametrize("map_name", ["5x5", "8x8"])
def test_optimum_is_catgrids(map_name: str) -> None:
    env = CatGridTurnEnv(map_name=map_name)
    P, P4 = env.transition_table(), build_transition_table(env.tables)
    assert all(P[s][a] == P4[s][a] for s in P4 for a in range(4)) and all(len(P[s]) == 5 for s in P)
    target = optimal_start_return({"map_name": map_name}, horizon=50)
    assert env.optimal_start_return() == pytest.approx(target, abs=1e-9)
    assert target > 50.0  # the 5x5 optimum reaches the meat most of the time
    # a rewarding no-move turn would beat CatGrid's optimum: the check is not vacuous
    assert finite_start(turn_table(env.tables, 5.0), env) > target


def finite_start(P: dict, env: CatGridTurnEnv) -> float:
    return float(finite_horizon_values(P, 50)[env.tables.start])


@pytest.mark.parametrize("kwargs", [{"max_turns": 0}, {"max_turns": 2.5}, {"invalid_penalty": 1.0},
                                    {"invalid_penalty": "x"}, {"slip": 1.0}, {"map_name": "9x9"}])
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        CatGridTurnEnv(**kwargs)


def test_non_str_turn_raises() -> None:
    env = CatGridTurnEnv()
    env.reset(seed=0)
    with pytest.raises(TypeError, match="must be a str"):
        env.step(3)  # type: ignore[arg-type]


def test_transcripts_are_legal_seeded_and_optimal_play_reaches_the_meat(tmp_path) -> None:
    def play(prob: float, slip: float = 0.2) -> list:
        return play_transcripts(lambda: CatGridTurnEnv(slip=slip),
                                lambda env: catgrid_move_policy(env, optimal_prob=prob), episodes=8, seed=3)

    random_play = play(0.0)
    assert random_play == play(0.0) and random_play != play(0.5)
    for t in random_play:
        assert all(parse_move(a) != NO_MOVE for a in t.agent_texts)
        assert len(t.env_texts) == len(t.agent_texts) + 1 and (t.terminated or len(t.agent_texts) == 50)
    best = play(1.0, slip=0.0)
    assert all(t.episode_return == 99.0 and len(t.agent_texts) == 5 for t in best)  # 5 moves over one broom
    text = transcript_text(best[0], end_of_turn="<|eot|>")
    assert text.startswith("at 0,0 up # down . left # right . ") and text.count("<|eot|>") == 5
    path = write_transcripts(tmp_path / "sft" / "catgrid.jsonl", [transcript_text(t) for t in random_play])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["text"] for r in rows] == [transcript_text(t) for t in random_play]
    with pytest.raises(ValueError, match="at least one"):
        write_transcripts(tmp_path / "empty.jsonl", [])


def test_make_tables_reused_not_copied() -> None:
    env = CatGridTurnEnv(map_name="8x8", slip=0.1)
    ref = make_tables(map_name="8x8", slip=0.1)
    assert env.tables.desc == ref.desc and np.array_equal(env.tables.succ, ref.succ)
