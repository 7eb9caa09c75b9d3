"""The RLHF pipeline end to end, scaled down (slow): SFT → reward model → PPO, offline."""

from __future__ import annotations

import dataclasses

import pytest

from runners import rlhf


@pytest.mark.slow
def test_ci_pipeline_reward_model_beats_chance_and_ppo_raises_reward(tmp_path, imdb_dir):
    cfg = dataclasses.replace(rlhf.PRESETS["ci"], output_dir=str(tmp_path / "out"), log_dir=str(tmp_path / "runs"))
    rep = rlhf.main(cfg)
    assert rep["stages"]["reward_model"]["eval_accuracy"] > 0.6
    assert rep["after"]["score_mean"] > rep["before"]["score_mean"]
    assert rep["before"]["kl_mean"] == pytest.approx(0.0, abs=1e-3)  # the SFT policy is its own reference
    md = (tmp_path / "out" / "report.md").read_text()
    assert "before PPO" in md and "after PPO" in md and "TensorBoard" in md
    assert (tmp_path / "out" / "sft" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "rm" / "model.safetensors").is_file()
