"""The minibatch loss (agents/objective.py) against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from agents.algos import ALGOS
from agents.config import AgentConfig
from agents.objective import STAT_KEYS, MinibatchTerms, minibatch_loss


def terms(**kw) -> MinibatchTerms:
    base = dict(logprob=torch.log(torch.tensor([0.5, 0.25])), old_logprob=torch.log(torch.tensor([0.5, 0.5])),
                adv=torch.tensor([1.0, -1.0]), values=torch.tensor([1.0, 0.0]), old_values=torch.tensor([1.0, 0.0]),
                targets=torch.tensor([2.0, 0.0]), entropy=torch.tensor(0.7))
    return MinibatchTerms(**(base | kw))


def test_ppo_loss_by_hand():
    c = AgentConfig(algo="ppo", clip_coef=0.2, ent_coef=0.01, vf_coef=0.5)
    loss, parts = minibatch_loss(ALGOS["ppo"], c, terms(), kl_coef=0.0)
    # ratios 1 and 0.5; -min(ρA, clip(ρ)A): step 1: -1; step 2 (A=-1): -max(... ) = -(-0.8) = 0.8 -> mean -0.1
    # value loss: 0.5 * mean(max((v - t)^2, (clip(v) - t)^2)) = 0.5 * (1 + 0) / 2 = 0.25
    assert loss.item() == pytest.approx(-0.1 - 0.01 * 0.7 + 0.5 * 0.25)
    p = dict(zip(STAT_KEYS, parts.tolist()))
    assert p["policy_loss"] == pytest.approx(-0.1) and p["value_loss"] == pytest.approx(0.25)
    assert p["clipfrac"] == pytest.approx(0.5) and math.isnan(p["kl_loss"])


def test_reinforce_without_baseline_has_no_value_term_and_k3_enters_with_beta():
    c = AgentConfig(algo="reinforce", reinforce_baseline=False, ent_coef=0.0)
    ref = torch.log(torch.tensor([0.5, 0.5]))
    loss, parts = minibatch_loss(ALGOS["reinforce"], c, terms(ref_logprob=ref), kl_coef=0.1)
    pg = -(torch.log(torch.tensor([0.5, 0.25])) * torch.tensor([1.0, -1.0])).mean().item()
    r = torch.tensor([1.0, 2.0])  # π_ref / π_θ per step
    k3 = (r - torch.log(r) - 1).mean().item()
    assert loss.item() == pytest.approx(pg + 0.1 * k3)
    p = dict(zip(STAT_KEYS, parts.tolist()))
    assert math.isnan(p["value_loss"]) and math.isnan(p["approx_kl"]) and p["kl_loss"] == pytest.approx(k3)
