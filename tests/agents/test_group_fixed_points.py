"""The expected RLOO/GRPO update on the exactly enumerated toy of ``group_toy.py``: zero at the optimum for the
unbiased variants (constant denominator, no std division), not zero for the others (docs/algorithms.md)."""

from __future__ import annotations

import pytest
from group_toy import OPTIMUM, expected_update


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("toy", ["binary", "graded"])
def test_constant_denominator_without_std_has_its_fixed_point_at_the_optimum(toy, k):
    assert expected_update(OPTIMUM, toy, "RLOO / Dr. GRPO (no std, constant)", k) == pytest.approx(0.0, abs=1e-12)
    assert expected_update(OPTIMUM - 0.05, toy, "RLOO / Dr. GRPO (no std, constant)", k) > 1e-3  # ascent to p*


@pytest.mark.parametrize("variant", ["no std, token mean", "no std, sequence mean", "GRPO default (std, token mean)",
                                     "original GRPO (std, sequence mean)"])
def test_action_dependent_denominators_move_the_fixed_point(variant):
    assert expected_update(OPTIMUM, "graded", variant, 4) > 1e-3  # still pushing p above the optimum


def test_std_division_moves_the_fixed_point_of_graded_rewards_only():
    assert expected_update(OPTIMUM, "binary", "std, constant", 4) == pytest.approx(0.0, abs=1e-12)
    assert expected_update(OPTIMUM, "graded", "std, constant", 4) > 1e-3
