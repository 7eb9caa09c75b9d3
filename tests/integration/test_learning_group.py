"""RLOO and GRPO learn CatGrid-v0 5x5 to 0.95·V*(start) within their default budgets (slow).

Both runs (default presets, seed 0) start together in a 2-process pool (one torch thread each);
the greedy policy is evaluated on 500 episodes against value iteration's ``V*(start)``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

ALGOS = ("rloo", "grpo")


def _train(algo: str, log_dir: str) -> dict[str, Any]:
    from runners.train import preset, train

    cfg = dataclasses.replace(preset("CatGrid-v0", algo), seed=0, log_dir=log_dir, run_name=f"{algo}_5x5_0", threads=1,
                              progress=False, eval_episodes=500)
    result = train(cfg)
    result.pop("agent")
    return result


@pytest.fixture(scope="module")
def group_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    log_dir = str(tmp_path_factory.mktemp("group_learning_runs"))
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        futures = {algo: pool.submit(_train, algo, log_dir) for algo in ALGOS}
        return {algo: f.result() for algo, f in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_group_algo_reaches_95_percent_of_optimum_on_5x5(group_results, algo):
    result = group_results[algo]
    ev = result["eval"]
    assert ev["greedy"]["ratio_to_v_star"] >= 0.95, ev
    assert result["global_step"] <= {"rloo": 600_000, "grpo": 200_000}[algo]  # the default budgets
