"""The RLHF pipeline end to end, scaled down (slow): SFT → reward model → PPO, offline.

The CI preset checks what the tiny preset promises, at a smaller scale: the reward model beats
chance, PPO raises the held-out score, the length controls keep responses as long as before
(no winning by ending early), and the trained policy leaves as a loadable transformers model.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from runners import rlhf


@pytest.mark.slow
def test_ci_pipeline_score_up_length_kept_policy_exported(tmp_path, imdb_dir):
    cfg = dataclasses.replace(rlhf.PRESETS["ci"], output_dir=str(tmp_path / "out"), log_dir=str(tmp_path / "runs"))
    rep = rlhf.main(cfg)
    before, after, checks = rep["before"], rep["after"], rep["checks"]
    assert rep["stages"]["reward_model"]["eval_accuracy"] > 0.6
    assert checks["gain"] > 0 and checks["gain_in_sems"] > 2, checks  # score up, beyond noise
    assert 0.75 <= checks["length_ratio_tokens"] <= 1.25, checks  # length kept (tokens and characters)
    assert 0.75 <= checks["length_ratio_chars"] <= 1.25, checks
    assert before["tokens_mean"] >= cfg.min_new_tokens and after["tokens_mean"] >= cfg.min_new_tokens
    assert before["kl_mean"] == pytest.approx(0.0, abs=1e-3)  # the SFT policy is its own reference
    # ci scale: 24 updates x 32 episodes with horizon 200 let beta move <= 3.2 % per update, so the KL is still
    # ramping at the end and its last value varies with seed, threads and CPU kernels (5 runs: 6.2-8.9 nats).
    # Here: the policy moved away from the reference and the KL did not run away; closed-loop control is
    # tested in tests/agents/test_kl.py.
    assert 0.25 * cfg.kl_target <= checks["final_kl"] <= 2 * cfg.kl_target, checks
    assert rep["ppo"]["stopped_early"] is None and rep["stages"]["sft"]["stopped_early"] is None
    md = (tmp_path / "out" / "report.md").read_text()
    assert "before PPO" in md and "after PPO" in md and "standard errors" in md and "distinct-2" in md

    policy = tmp_path / "out" / "policy"
    model = AutoModelForCausalLM.from_pretrained(policy)
    tok = AutoTokenizer.from_pretrained(policy)
    torch.manual_seed(0)
    out = model.generate(**tok(["This movie"], return_tensors="pt"))
    assert out.shape[1] > 2
    assert (tmp_path / "out" / "value_head.safetensors").is_file()
    assert (tmp_path / "out" / "sft" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "rm" / "model.safetensors").is_file()


def _fake_eval(scores: list[float], tokens: float, chars: float) -> dict:
    from runners.common.text_eval import mean_ci

    m = mean_ci(scores)
    return {"episodes": len(scores), "score_mean": m["mean"], "score_std": m["std"], "score_sem": m["sem"],
            "score_ci95": m["ci95"], "kl_mean": 0.0, "tokens_mean": tokens, "chars_mean": chars, "eos_rate": 0.1,
            "distinct_1": 0.5, "distinct_2": 0.8,
            "samples": [{"prompt": f"p{i}", "response": f"r|{i}", "score": s, "kl": 0.0} for i, s in enumerate(scores)]}


def test_report_shows_both_tables_the_checks_and_a_stage_stopped_early():
    from runners.common.text_eval import paired_gain

    before, after = _fake_eval([0.0, 1.0, 0.5, 0.2], 15.0, 60.0), _fake_eval([1.0, 2.0, 1.5, 0.9], 14.0, 57.0)
    cfg = dataclasses.asdict(rlhf.PRESETS["tiny"])
    rep = {"config": cfg, "timings": {"sft_seconds": 300.0, "rm_seconds": 400.0, "ppo_seconds": 500.0,
                                      "eval_seconds": 20.0},
           "stages": {"sft": {"eval_perplexity": 210.0, "stopped_early": None},
                      "reward_model": {"eval_accuracy": 0.86, "eval_pairs": 1000, "stopped_early": "cap hit"}},
           "ppo": {"global_step": 1000, "stopped_early": None}, "before": before, "after": after,
           "checks": {**paired_gain(before, after), "length_ratio_tokens": 14 / 15, "length_ratio_chars": 57 / 60,
                      "rm_accuracy": 0.86, "final_kl": 5.5, "kl_target": 6.0},
           "policy_dir": "out/policy", "tensorboard": ["runs", "runs/x"]}
    md = rlhf.report_markdown(rep)
    assert "| before PPO (SFT policy) | 0.425 ± " in md and "| after PPO | 1.350 ± " in md
    assert "**reward model stopped early** (cap hit)" in md
    assert "0.93" in md and "0.95" in md and "standard errors**" in md and "(20.3 min)" in md
    assert "r\\|0" in md  # table cells escaped
