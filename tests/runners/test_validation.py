"""Every numeric option of every runner config is checked in ``__post_init__`` (before any work):
one table per config, one row per class of bad value (zero, negative, NaN, inf, bool, out of range)."""

from __future__ import annotations

import math

import pytest

from agents.agent import AgentConfig
from agents.validate import field_problem
from runners import compare, evaluate, rlhf, sft, train, train_reward

NAN, INF = math.nan, math.inf

CASES = {
    train.TrainConfig: [
        ("num_steps", 0, "num_steps must be an integer >= 1"),
        ("num_envs", -1, "num_envs must be an integer >= 1"),
        ("checkpoint_every", 0, "checkpoint_every must be an integer >= 1"),
        ("total_timesteps", 0, "total_timesteps must be an integer >= 1"),
        ("total_timesteps", 100, "must cover at least one rollout"),
        ("reward_scale", NAN, "reward_scale must be finite"),
        ("reward_scale", -1.0, "reward_scale must be > 0"),
        ("eval_episodes", -5, "eval_episodes must be an integer >= 0"),
        ("kl_coef", INF, "kl_coef must be finite"),
        ("kl_target", 0.0, "kl_target must be > 0"),
        ("slip", 1.0, "slip must be in [0,1)"),
        ("seed", -1, "seed must be an integer >= 0"),
        ("threads", 0, "threads must be an integer >= 1"),
        ("keep_checkpoints", 0, "keep_checkpoints must be an integer >= 1"),
        ("d_model", 30, "d_model (30) must be a multiple of n_head (4)"),
        ("max_new_tokens", 0, "max_new_tokens must be an integer >= 1"),
        ("sample_every", True, "sample_every must be an integer"),
    ],
    AgentConfig: [
        ("adam_eps", 0.0, "adam_eps must be > 0"),
        ("learning_rate", INF, "learning_rate must be finite"),
        ("learning_rate", -1e-3, "learning_rate must be >= 0"),
        ("ent_coef", -0.01, "ent_coef must be >= 0"),
        ("vf_coef", -0.5, "vf_coef must be >= 0"),
        ("gamma", 1.5, "gamma must be in [0,1]"),
        ("gae_lambda", NAN, "gae_lambda must be finite"),
        ("clip_coef", 0.0, "clip_coef must be > 0"),
        ("max_grad_norm", NAN, "max_grad_norm must be finite"),
        ("target_kl", 0.0, "target_kl must be > 0"),
        ("update_epochs", 1.5, "update_epochs must be an integer"),
        ("num_minibatches", 0, "num_minibatches must be an integer >= 1"),
    ],
    sft.SFTConfig: [
        ("batch_size", 0, "batch_size must be an integer >= 1"),
        ("block_size", 0, "block_size must be an integer >= 2"),
        ("learning_rate", NAN, "learning_rate must be finite"),
        ("max_steps", 0, "max_steps must be an integer >= 1"),
        ("eval_every", 0, "eval_every must be an integer >= 1"),
        ("min_lr_ratio", 2.0, "min_lr_ratio must be in [0,1]"),
        ("warmup_steps", -1, "warmup_steps must be an integer >= 0"),
        ("max_minutes", 0.0, "max_minutes must be > 0"),
        ("n_embd", 130, "n_embd (130) must be a multiple of n_head (4)"),
    ],
    train_reward.RewardConfig: [
        ("batch_size", 0, "batch_size must be an integer >= 1"),
        ("max_length", 0, "max_length must be an integer >= 1"),
        ("grad_clip", -1.0, "grad_clip must be > 0"),
        ("weight_decay", INF, "weight_decay must be finite"),
        ("save_every", 0, "save_every must be an integer >= 1"),
        ("n_train_pairs", 0, "n_train_pairs must be an integer >= 1"),
        ("prefix_words", (5, 2), "prefix_words must be None or (lo, hi)"),
    ],
    rlhf.RLHFConfig: [
        ("num_envs", 0, "num_envs must be an integer >= 1"),
        ("ppo_updates", 0, "ppo_updates must be an integer >= 1"),
        ("kl_coef", -0.1, "kl_coef must be >= 0"),
        ("learning_rate", INF, "learning_rate must be finite"),
        ("sft_size", (0, 64), "sft_size must be None or"),
    ],
    compare.CompareConfig: [
        ("seeds", [], "seeds must list at least one seed"),
        ("seeds", [-1], "seeds must be integers >= 0"),
        ("algos", [], "algos must list at least one"),
        ("algos", ["a2c"], "algos must be among"),
        ("jobs", 0, "jobs must be an integer >= 1"),
        ("total_timesteps", 0, "total_timesteps must be an integer >= 1"),
    ],
    evaluate.EvalArgs: [
        ("num_envs", 0, "num_envs must be an integer >= 1"),
        ("episodes", 0, "episodes must be an integer >= 1"),
    ],
}
REQUIRED = {evaluate.EvalArgs: {"checkpoint": "run"}}


@pytest.mark.parametrize(("cls", "field", "value", "message"),
                         [(cls, *row) for cls, rows in CASES.items() for row in rows],
                         ids=lambda x: getattr(x, "__name__", None) or str(x))
def test_bad_value_is_rejected_with_its_name(cls, field, value, message):
    with pytest.raises(ValueError, match=f"invalid {cls.__name__}: ") as err:
        cls(**REQUIRED.get(cls, {}), **{field: value})
    assert message in str(err.value)


@pytest.mark.parametrize("cls", list(CASES))
def test_defaults_are_valid(cls):
    cls(**REQUIRED.get(cls, {}))


def test_all_problems_in_one_message():
    with pytest.raises(ValueError) as err:
        AgentConfig(adam_eps=0.0, ent_coef=-1.0, learning_rate=NAN)
    assert all(f in str(err.value) for f in ("adam_eps", "ent_coef", "learning_rate"))


@pytest.mark.parametrize("argv", [["--num-steps", "0"], ["--checkpoint-every", "0"], ["--total-timesteps", "0"],
                                  ["--agent.adam-eps", "0"], ["--reward-scale", "nan"],
                                  ["--agent.learning-rate", "inf"], ["--agent.ent-coef", "-0.1"]])
def test_train_cli_rejects_before_any_work(argv, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main([*argv, "--log-dir", str(tmp_path)])
    assert "invalid" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was started


@pytest.mark.parametrize(("main", "argv", "message"), [
    (sft.main, ["--preset", "tiny", "--batch-size", "0"], "batch_size must be an integer >= 1"),
    (train_reward.main, ["--max-length", "0"], "max_length must be an integer >= 1"),
], ids=["sft", "reward"])
def test_stage_clis_reject_bad_numbers(main, argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in " ".join(capsys.readouterr().err.split())


def test_field_rules():
    assert field_problem("x", 3, "int>=1") is None
    assert field_problem("x", None, ">0?") is None
    assert "must be set" in field_problem("x", None, ">0")
    assert "must be a number" in field_problem("x", "1", ">0")
    assert field_problem("x", 0.0, "[0,1)") is None and field_problem("x", 1.0, "[0,1)")
