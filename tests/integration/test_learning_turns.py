"""CatGrid-Text-v0 learning (slow): a tiny LM SFT'd on random legal transcripts, then PPO at γ = 1, plays the 5x5
map greedily at >= 0.9 V*(start), the exact undiscounted optimum of the 12-turn turn MDP."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import catgrid_text  # noqa: E402


@pytest.mark.slow
def test_ppo_reaches_09_v_star_greedy_on_catgrid_text(tmp_path, one_thread):
    recipe = catgrid_text.Recipe()
    lm, tok = catgrid_text.sft_model(tmp_path, 0, recipe)
    result = catgrid_text.train(lm, tok, "ppo", 0, recipe)
    assert result["first_return"] < 0.6 * result["v_star"], result  # the SFT model plays legal random moves
    assert result["ratio"] >= 0.9, result
