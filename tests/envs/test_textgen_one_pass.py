"""``ref_mode="one_pass"`` of ``TextGen-IMDB-v0`` used step by step: its documented reward contract."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401
from runners.common.run_spec import env_kwargs, preset

pytestmark = pytest.mark.usefixtures("one_thread")


def play(kw: dict, ref_mode: str, actions: list[int], **extra) -> tuple[list[float], list[dict], gym.Env]:
    env = gym.make("TextGen-IMDB-v0", max_new_tokens=len(actions), min_new_tokens=2, ref_mode=ref_mode, **kw,
                   **extra)
    env.reset(seed=3)
    rewards, infos = [], []
    for a in actions:
        _, r, term, _, info = env.step(a)
        rewards.append(r)
        infos.append(info)
        if len(infos) == 2 and ref_mode == "one_pass":
            infos[-1]["running"] = env.unwrapped.running_ref_logprobs()
    assert term
    return rewards, infos, env


def test_one_pass_pays_the_kl_on_the_last_step_with_the_per_step_log_probs(kw, tiny_tokenizer):
    actions = [tiny_tokenizer.eos_token_id + 7, 11, 12, tiny_tokenizer.eos_token_id]  # EOS masked for 2 tokens
    per_rewards, per_infos, per_env = play(kw, "per_step", actions)
    one_rewards, one_infos, one_env = play(kw, "one_pass", actions)
    per_step_ref = np.array([info["ref_logprob"] for info in per_infos])  # (4,)
    assert all("ref_logprob" not in info for info in one_infos)
    assert one_rewards[:-1] == [0.0, 0.0, 0.0]
    lp = one_infos[-1]["ref_logprobs"]
    np.testing.assert_allclose(lp, per_step_ref, atol=1e-5)
    np.testing.assert_allclose(one_infos[1]["running"], per_step_ref[:2], atol=1e-5)  # mid-episode pass
    score = one_infos[-1]["score"]
    assert score == per_infos[-1]["score"]
    assert one_rewards[-1] == pytest.approx(score + kw["kl_coef"] * lp.sum(), abs=1e-12)
    assert sum(one_rewards) == pytest.approx(sum(per_rewards), abs=1e-5)  # the same episode return
    assert one_env.unwrapped.pass_counts() == {"reference_decode": 0, "reference_prefill": 0,
                                               "reference_teacher_forced": 2, "reward": 1}
    assert per_env.unwrapped.pass_counts() == {"reference_decode": 3, "reference_prefill": 1,
                                               "reference_teacher_forced": 0, "reward": 1}


def test_one_pass_scores_at_the_sampling_temperature_as_the_per_step_reference(kw, tiny_tokenizer):
    actions = [tiny_tokenizer.eos_token_id + 7, 11, 12, tiny_tokenizer.eos_token_id]
    _, per_infos, _ = play(kw, "per_step", actions, temperature=0.7)
    _, one_infos, _ = play(kw, "one_pass", actions, temperature=0.7)
    _, plain_infos, _ = play(kw, "one_pass", actions)
    per_step_ref = np.array([info["ref_logprob"] for info in per_infos])  # (4,) at temperature 0.7
    np.testing.assert_allclose(one_infos[-1]["ref_logprobs"], per_step_ref, atol=1e-5)
    assert np.abs(plain_infos[-1]["ref_logprobs"] - per_step_ref).max() > 1e-3  # the temperature matters here


def test_ref_mode_is_checked_and_only_the_trainer_opts_in(kw):
    with pytest.raises(ValueError, match="ref_mode must be one of"):
        gym.make("TextGen-IMDB-v0", ref_mode="teacher", **kw)
    assert gym.make("TextGen-IMDB-v0", **kw).unwrapped.ref_mode == "per_step"  # the env's default
    assert env_kwargs(preset("TextGen-IMDB-v0", "ppo"))["ref_mode"] == "one_pass"  # runners.train's


def test_autocast_dtype_covers_the_reward_model_and_is_opt_in(kw):
    seen = []

    def recording_score(texts: list[str]) -> list[float]:
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return [0.0] * len(texts)

    for dtype in (None, "bfloat16"):
        env = gym.make("TextGen-IMDB-v0", max_new_tokens=2, ref_mode="one_pass", autocast_dtype=dtype,
                       **(kw | {"reward_model": recording_score}))
        env.reset(seed=0)
        env.step(5)
        env.step(6)
    assert seen == [False, True]
    cfg = preset("TextGen-IMDB-v0", "ppo")
    assert env_kwargs(cfg)["autocast_dtype"] is None  # off unless asked for
    assert env_kwargs(dataclasses.replace(cfg, autocast_dtype="bfloat16"))["autocast_dtype"] == "bfloat16"
