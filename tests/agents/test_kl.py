"""The KL-coefficient controllers (agents/kl.py) against hand-computed updates and a closed loop."""

from __future__ import annotations

import pytest

from agents.kl import AdaptiveKLController, FixedKLController


def test_fixed_controller_never_moves() -> None:
    ctl = FixedKLController(0.3)
    assert ctl.update(100.0, 64) == 0.3 and ctl.update(0.0, 64) == 0.3


@pytest.mark.parametrize(
    ("kl", "n", "expected"),
    [
        (9.0, 10, 0.2 * (1 + 0.2 * 10 / 100)),  # KL/target - 1 = 0.5, clipped to +0.2 -> beta up 2%
        (6.6, 10, 0.2 * (1 + 0.1 * 10 / 100)),  # error 0.1, inside the clip -> up 1%
        (6.0, 10, 0.2),  # on target: unchanged
        (0.0, 10, 0.2 * (1 - 0.2 * 10 / 100)),  # error -1, clipped to -0.2 -> down 2%
        (3.0, 50, 0.2 * (1 - 0.2 * 50 / 100)),  # n/horizon scales the step: down 10%
    ],
)
def test_adaptive_update_matches_hand_computed_values(kl: float, n: int, expected: float) -> None:
    ctl = AdaptiveKLController(value=0.2, target=6.0, horizon=100.0)
    assert ctl.update(kl, n) == pytest.approx(expected, rel=1e-12)
    assert ctl.value == pytest.approx(expected, rel=1e-12)


def test_closed_loop_settles_near_the_target() -> None:
    """A policy whose KL falls as beta rises (KL = 1.2 / beta: the target 6 needs beta = 0.2) is held near the
    target from either side, at the tiny RLHF preset's step size (64 episodes per update, horizon 200)."""
    for start in (0.05, 0.8):
        ctl = AdaptiveKLController(value=start, target=6.0, horizon=200.0)
        kl = 1.2 / ctl.value
        for _ in range(150):
            kl = 1.2 / ctl.update(kl, 64)
        assert kl == pytest.approx(6.0, rel=0.05) and ctl.value == pytest.approx(0.2, rel=0.05)


@pytest.mark.parametrize("kwargs", [{"value": -0.1}, {"target": 0.0}, {"horizon": 0.0}])
def test_adaptive_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="AdaptiveKLController needs"):
        AdaptiveKLController(**kwargs)
