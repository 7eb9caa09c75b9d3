"""Tests of envs.interop.gem: GEM's GuessTheNumber with short texts, and its legal player for SFT transcripts."""

from __future__ import annotations

import numpy as np
import pytest

from envs.interop.gem import ShortGuessTheNumber, extract_guess, guess_policy, make_guess_the_number, short_hint
from envs.transcripts import play_transcripts
from envs.turns import TurnEnv

gem = pytest.importorskip("gem")


@pytest.mark.parametrize(("text", "sent"), [
    ("7", "\\boxed{7}"), (" 10 ", "\\boxed{10}"), ("my guess is 3, or 4", "\\boxed{3}"), ("\\boxed{5}", "\\boxed{5}"),
    ("no idea", "no idea"), ("2.5", "2.5"), ("", ""),
])
def test_extract_guess(text: str, sent: str) -> None:
    assert extract_guess(text) == sent


def test_short_hints_of_gems_texts() -> None:
    assert short_hint("At turn 1, you guessed 5, and the target number is higher than 5.") == "higher than 5"
    assert short_hint("At turn 2, you guessed 9, and the target number is lower than 9.") == "lower than 9"
    assert short_hint("Congratulations! You guessed the correct number 7 in 3 turns.") == "7 is right"
    assert short_hint("At turn 2, you guessed 12, which is outside the range specified.") == "12 is out of range"
    assert short_hint("At turn 3, you guessed 4, which has been already guessed before.") == "4 again"
    assert short_hint("At turn 3, you did not provide a valid guess.") == "no number"
    assert short_hint("You have reached the maximum number of turns.") == "no turns left"
    assert short_hint("something new") == "something new"


def _binary_search(env: ShortGuessTheNumber) -> tuple[list[str], float, int]:
    texts, total, turns = [], 0.0, 0
    done = False
    while not done:
        guess = (env.low + env.high) // 2
        text, r, term, trunc, _ = env.step(f"{guess}")
        texts.append(text)
        total, turns, done = total + r, turns + 1, term or trunc
    return texts, total, turns


def test_episodes_are_seeded_short_and_gems_rewards_hold() -> None:
    env = make_guess_the_number()
    assert isinstance(env, TurnEnv)
    targets = [env.reset(seed=s)[1]["target"] for s in range(60)]
    assert targets == [env.reset(seed=s)[1]["target"] for s in range(60)] and set(targets) == set(range(1, 11))
    text, _ = env.reset(seed=0)
    assert text == "guess 1-10:"
    for s in range(40):  # binary search always wins within GEM's 4 turns, using only the short hints' bounds
        env.reset(seed=s)
        texts, total, turns = _binary_search(env)
        assert total == 1.0 and turns <= 4 and texts[-1].endswith(" is right")
    env.reset(seed=3)
    _, r, term, trunc, info = env.step("pass")  # no number: GEM's format error ends the episode
    assert (r, term, trunc) == (-0.1, True, False) and "target" in info


def test_last_turn_reward_is_gems_distance_score() -> None:
    env = make_guess_the_number()
    _, info = env.reset(seed=5)
    wrong = [n for n in range(1, 11) if n != info["target"]]
    for g in wrong[:3]:
        assert env.step(str(g))[1] == 0.0
    text, r, term, trunc, _ = env.step(str(wrong[3]))
    assert text == "no turns left" and term and trunc and r == pytest.approx(1 - abs(wrong[3] - info["target"]) / 9)


def test_transcripts_of_legal_play() -> None:
    def play(p: float) -> list:
        return play_transcripts(make_guess_the_number, lambda e: guess_policy(e, informed_prob=p), episodes=150,
                                seed=1)

    informed, blind = play(1.0), play(0.0)
    assert informed[:5] == play(1.0)[:5]  # seeded
    for t in informed + blind:
        guesses = [int(a) for a in t.agent_texts]
        assert len(set(guesses)) == len(guesses) and all(1 <= g <= 10 for g in guesses) and len(guesses) <= 4
        assert t.env_texts[0] == "guess 1-10:"
    win = lambda ts: np.mean([t.env_texts[-1].endswith("is right") for t in ts])
    assert win(informed) > 0.65 and win(blind) < 0.5  # the hints are worth learning to read
    with pytest.raises(TypeError, match="ShortGuessTheNumber"):
        guess_policy(object())  # type: ignore[arg-type]
