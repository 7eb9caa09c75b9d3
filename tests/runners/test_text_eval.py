"""runners.common.text_eval: hand-checked metric functions and the reference policy's KL (the CLI on a text run
dir: test_evaluate.py)."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import pytest
import torch

import envs  # noqa: F401  (registers the envs)
from agents.agent import Agent, AgentConfig
from agents.networks import CausalLMPolicy
from envs.imdb import load_imdb
from runners.common.text_eval import distinct_n, evaluate_text, format_text_report, mean_ci, paired_gain

pytestmark = pytest.mark.usefixtures("one_thread")


def test_metric_functions_by_hand() -> None:
    # unigrams a b a b a c: 3 distinct of 6; bigrams ab ba ab ac: 3 distinct of 4
    assert distinct_n(["a b a b", "a c"], 1) == 0.5
    assert distinct_n(["a b a b", "a c"], 2) == 0.75
    assert distinct_n(["one"], 2) == 0.0
    m = mean_ci([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(5 / 3)  # sample std (ddof 1) of 1..4
    assert m["mean"] == 2.5 and m["std"] == pytest.approx(sd) and m["sem"] == pytest.approx(sd / 2)
    assert m["ci95"] == pytest.approx((2.5 - 1.96 * sd / 2, 2.5 + 1.96 * sd / 2))
    before = {"samples": [{"prompt": p, "score": s} for p, s in zip("abc", (0.0, 1.0, 2.0))]}
    after = {"samples": [{"prompt": p, "score": s} for p, s in zip("abc", (1.0, 1.0, 4.0))]}
    g = paired_gain(before, after)  # differences 1, 0, 2: mean 1, sd 1, sem 1/sqrt(3)
    assert g["gain"] == 1.0 and g["gain_sem"] == pytest.approx(1 / math.sqrt(3))
    with pytest.raises(ValueError, match="different prompts"):
        paired_gain(before, {"samples": after["samples"][::-1]})


def test_reference_policy_has_zero_kl_and_exact_lengths(tiny_lm, tiny_tokenizer) -> None:
    texts = [r["text"] for r in load_imdb("test", limit=100, seed=0)]
    vec = gym.make_vec("TextGen-IMDB-v0", num_envs=24, vectorization_mode="vector_entry_point", model=tiny_lm,
                        tokenizer=tiny_tokenizer, reward_model=lambda t: [float(len(x)) for x in t], dataset=texts,
                        device="cpu", kl_coef=0.1, max_new_tokens=5, min_new_tokens=5)
    agent = Agent(CausalLMPolicy(copy.deepcopy(tiny_lm)), AgentConfig())
    res = evaluate_text(agent, vec, 5, seed=3)
    assert res["episodes"] == 24 and len(res["samples"]) == 24
    assert res["kl_mean"] == pytest.approx(0.0, abs=1e-4)  # the policy is its reference (masked alike)
    assert res["tokens_mean"] == 5.0 and res["eos_rate"] == 0.0  # EOS masked for all 5 tokens
    assert res["chars_mean"] == pytest.approx(sum(len(s["response"]) for s in res["samples"]) / 24)
    assert 0 < res["distinct_2"] <= 1 and res["score_sem"] > 0
    torch.manual_seed(123)
    torch.rand(7)  # the caller's RNG stream moved on: the evaluation must not depend on it, nor change it
    state = torch.get_rng_state()
    again = evaluate_text(agent, vec, 5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # left as it was
    assert [s["prompt"] for s in again["samples"]] == [s["prompt"] for s in res["samples"]]  # paired by seed
    assert [s["response"] for s in again["samples"]] == [s["response"] for s in res["samples"]]  # same samples
    # a group-based agent (an RLOO/GRPO run: the collector refuses group_size 1 for learning) is evaluated alike
    assert evaluate_text(Agent(agent.net, AgentConfig(algo="grpo")), vec, 5, seed=3)["samples"] == res["samples"]
    other = evaluate_text(agent, vec, 5, seed=4)
    assert [s["response"] for s in other["samples"]] != [s["response"] for s in res["samples"]]
    md = format_text_report(res)
    assert "distinct-2" in md and md.count("\n| ") >= 10
