"""Honest plots and TensorBoard output: optima of the same quantity as the curve, readable episode images."""

from __future__ import annotations

import numpy as np
import pytest

from envs.catgrid import finite_horizon_values, optimal_start_return, optimal_start_value
from runners import compare, train
from runners.common import logs as logging_utils
from runners.common.episode_image import episode_image


def test_finite_horizon_values_match_a_hand_computed_chain():
    # state 0: action 0 ends the episode with +1; action 1 stays with +0.5. State 1 is terminal.
    P = {0: {0: [(1.0, 1, 1.0, True)], 1: [(1.0, 0, 0.5, False)]},
         1: {0: [(1.0, 1, 0.0, True)], 1: [(1.0, 1, 0.0, True)]}}
    # V1 = max(1, .5) = 1; V2 = max(1, .5 + 1) = 1.5; V3 = max(1, .5 + 1.5) = 2
    assert [finite_horizon_values(P, h)[0] for h in range(4)] == [0.0, 1.0, 1.5, 2.0]
    assert finite_horizon_values(P, 3, policy=np.array([0, 0]))[0] == 1.0
    slip = {0: {0: [(0.5, 1, 1.0, True), (0.5, 0, 0.0, False)]}, 1: {0: [(1.0, 1, 0.0, True)]}}
    assert finite_horizon_values(slip, 2)[0] == pytest.approx(0.5 + 0.5 * 0.5)  # reach it at step 1 or 2


def test_the_plot_reference_is_the_undiscounted_optimum_not_v_star():
    kwargs = {"map_name": "5x5", "slip": 0.2}
    v_star = optimal_start_value(kwargs, 0.99)
    best, pi_star = optimal_start_return(kwargs, 50), optimal_start_return(kwargs, 50, gamma=0.99)
    assert v_star == pytest.approx(93.6549, abs=1e-3)
    # π*_γ crosses a broom (-1) and slips on it with p = 0.2: E[visits] = 1 / 0.8, so 100 - 1.25
    assert pi_star == pytest.approx(98.75, abs=1e-6) and best == pytest.approx(100.0, abs=1e-6)
    lines = compare.reference_lines(train.preset("CatGrid-v0", "ppo"), "charts/episodic_return")
    assert [round(v, 2) for v, _ in lines] == [100.0, 98.75]
    assert all("V*" not in label and "return" in label for _, label in lines)
    assert compare.reference_lines(train.preset("CatGrid-v0", "ppo"), "losses/entropy") == []


def test_final_evaluation_is_one_table():
    report = {"v_star_start": 93.65, "greedy": {"discounted_return": 93.1, "success_rate": 1.0},
              "sampled": {"discounted_return": 80.2, "success_rate": 0.9}}
    table = logging_utils.eval_table(report)
    assert table.splitlines()[:4] == ["|mode|discounted_return|success_rate|", "|-|-|-|",
                                      "|greedy|93.1|1|", "|sampled|80.2|0.9|"]
    assert "|v_star_start|93.65|" in table


def test_episode_image_has_separators_captions_and_legend():
    frame = np.full((80, 80, 3), 128, dtype=np.uint8)
    img = episode_image([frame] * 3, ["t=0 start", "t=1 Down +0", "t=2 Right +100"], "title",
                        [("meat +100", (200, 35, 45))])
    assert img.dtype == np.uint8 and img.ndim == 3
    rows = img[:, :, 0]
    frame_cols = np.flatnonzero((rows == 128).any(axis=0))
    gaps = np.flatnonzero(np.diff(frame_cols) > 1)
    assert len(gaps) == 2  # three frames side by side, white separators between them
    widths = np.diff(np.r_[-1, gaps, len(frame_cols) - 1])
    assert (widths >= 120).all()  # enlarged from 80 px to stay readable
    assert ((img == (200, 35, 45)).all(-1)).sum() > 100  # the legend swatch
    text_rows = img[:26].min(axis=(1, 2))
    assert text_rows.min() < 100  # the title is drawn
    with pytest.raises(ValueError, match="one caption per frame"):
        episode_image([frame], [], "t")
