"""TextGen-IMDB-v0 learning through runners.train (slow): PPO raises the score with KL near target."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from envs.imdb import load_imdb
from runners.train import preset, train


def e_count(texts: list[str]) -> list[float]:
    """A simple dense reward: 1/10 per letter 'e' in the text."""
    return [t.count("e") / 10.0 for t in texts]


def run(algo: str, updates: int, tiny_lm, tiny_tokenizer, tmp_path, kl_target: float = 3.0):
    cfg = preset("TextGen-IMDB-v0", algo)
    cfg = dataclasses.replace(cfg, num_envs=32, num_steps=9, max_new_tokens=8, total_timesteps=32 * 9 * updates,
                              agent=dataclasses.replace(cfg.agent, learning_rate=1e-3), kl_coef=0.05,
                              kl_target=kl_target, kl_horizon=300, log_dir=str(tmp_path), run_name=algo, threads=1,
                              progress=False, seed=0)
    texts = [r["text"] for r in load_imdb("train", limit=1000, seed=0)]
    result = train(cfg, env_overrides={"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": e_count,
                                       "dataset": texts, "device": "cpu"})
    acc = EventAccumulator(result["run_dir"])
    acc.Reload()
    series = {tag: np.array([e.value for e in acc.Scalars(tag)])
              for tag in ("objective/scores", "objective/kl", "objective/kl_coef", "charts/episodic_return")}
    return result, series


@pytest.mark.slow
def test_ppo_raises_score_and_keeps_kl_near_target(tiny_lm, tiny_tokenizer, tmp_path):
    _, s = run("ppo", 80, tiny_lm, tiny_tokenizer, tmp_path)
    score, kl = s["objective/scores"], s["objective/kl"]
    assert score[-20:].mean() > score[:3].mean() + 0.1, score
    assert 0.3 * 3.0 < kl[-20:].mean() < 3 * 3.0, kl  # adaptive β holds KL around its target
    assert s["objective/kl_coef"].std() > 0  # the controller moved β


def test_reinforce_runs_through_the_same_command(tiny_lm, tiny_tokenizer, tmp_path):
    result, s = run("reinforce", 4, tiny_lm, tiny_tokenizer, tmp_path)
    assert result["global_step"] == 4 * 32 * 9
    assert len(s["objective/scores"]) == 4 and np.isfinite(s["charts/episodic_return"]).all()


def test_cli_trains_text_env_from_a_local_model_dir(tiny_lm_dir, tmp_path):
    from runners.train import main

    result = main(["--env", "TextGen-IMDB-v0", "--model", str(tiny_lm_dir), "--reward-model", "vader",
                   "--num-envs", "4", "--num-steps", "5", "--max-new-tokens", "4", "--total-timesteps", "40",
                   "--sample-every", "1", "--device", "cpu", "--threads", "1", "--no-progress",
                   "--log-dir", str(tmp_path), "--run-name", "cli"])
    assert result["global_step"] == 40
    acc = EventAccumulator(result["run_dir"])
    acc.Reload()
    for tag in ("objective/scores", "objective/kl", "objective/kl_coef", "losses/entropy", "losses/approx_kl"):
        assert tag in acc.Tags()["scalars"], tag
    assert "objective/entropy" not in acc.Tags()["scalars"] and "env/score_mean" not in acc.Tags()["scalars"]
    assert "samples/text_summary" in acc.Tags()["tensors"]
    assert (tmp_path / "cli" / "checkpoint" / "model.safetensors").is_file()
