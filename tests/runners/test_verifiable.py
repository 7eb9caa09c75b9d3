"""runners.verifiable's reward and figures against hand numbers: the exact-match reward gives no partial credit,
the paired standard error of a gain."""

from __future__ import annotations

import math

import pytest

from runners import verifiable

pytest.importorskip("reasoning_gym")


def test_exact_match_rewards_the_exact_answer_only():
    rows = verifiable.problems(4, seed=0)
    assert all(r["prompt"].endswith(" Answer:") and r["prompt"].startswith("Calculate") for r in rows)
    answers = [r["answer"] for r in rows]
    meta = [r["metadata"] for r in rows]
    # reasoning-gym's own score_answer gives the last three len(answer) / len(completion) > 0: they contain it
    completions = [f" {answers[0]}", f"1{answers[1]}", f"-{answers[2]}", f"{answers[3]} {answers[3]}"]
    assert verifiable.exact_match([""] * 4, completions, answers, meta) == [1.0, 0.0, 0.0, 0.0]


def test_accuracy_and_the_paired_standard_error_of_a_gain():
    before = [True, False, False, False]
    after = [True, True, True, False]
    assert verifiable.accuracy(before) == (0.25, math.sqrt(0.25 * 0.75 / 4))
    # differences 0, 1, 1, 0: mean 0.5, unbiased variance (4 * 0.25) / 3 = 1/3, s.e. sqrt(1/3 / 4)
    d, se = verifiable.gain(before, after)
    assert d == 0.5 and se == pytest.approx(math.sqrt(1 / 12), rel=1e-12)
    with pytest.raises(ValueError):
        verifiable.gain(before, after[:3])
