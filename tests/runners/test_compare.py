"""runners.compare: algorithms over seeds in one log dir, a plot against the exact optima of the same quantity."""

from __future__ import annotations

import numpy as np
import pytest

from envs.catgrid_optimum import finite_horizon_values, optimal_start_return, optimal_start_value
from runners import compare, train


def test_compare_overlays_algorithms_and_plots(tmp_path):
    out = compare.main(compare.CompareConfig(seeds=[0, 1], log_dir=str(tmp_path), name="cmp", total_timesteps=4096,
                                             eval_episodes=8, jobs=1))
    cmp = tmp_path / "cmp"
    algos = ("ppo", "reinforce", "rloo", "grpo")  # the default: all four on one chart
    assert {p.name for p in cmp.iterdir() if p.is_dir()} == {f"CatGrid-v0__{a}__{s}" for a in algos for s in (0, 1)} \
        | {"by_algorithm"}
    assert (cmp / "returns.png").stat().st_size > 1000
    assert set(out["summary"]) == {f"{a}__{s}" for a in algos for s in (0, 1)}
    # TensorBoard by algorithm: the mean ± std over seeds of each chart, one run per algorithm, and the plot
    tag = "charts/episodic_return"
    grid, mean, std = compare.aggregate([compare.read_curve(cmp / f"CatGrid-v0__ppo__{s}", tag) for s in (0, 1)])
    by_algo = cmp / "by_algorithm" / "ppo"
    steps, logged = compare.read_curve(by_algo, f"mean/{tag}")
    np.testing.assert_allclose(logged, mean, rtol=1e-5)
    np.testing.assert_allclose(compare.read_curve(by_algo, f"mean/{tag}/upper")[1], mean + std, rtol=1e-5, atol=1e-4)
    assert std.max() > 0 and {p.name for p in (cmp / "by_algorithm").iterdir() if p.is_dir()} == set(algos)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(cmp / "by_algorithm"))
    acc.Reload()
    assert acc.Tags()["images"] == ["returns.png"]


def test_compare_refuses_an_existing_comparison_before_training(tmp_path):
    (tmp_path / "cmp" / "CatGrid-v0__ppo__0").mkdir(parents=True)
    (tmp_path / "cmp" / "CatGrid-v0__ppo__0" / "events.out").write_text("")
    with pytest.raises(FileExistsError, match="another --name"):
        compare.main(compare.CompareConfig(seeds=[0], log_dir=str(tmp_path), name="cmp", jobs=1, plot=False))
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["CatGrid-v0__ppo__0"]


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
