"""RLOO / GRPO group advantages against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from agents.group import group_sizes, grpo_advantages, rloo_advantages

# interleaved, non-contiguous group ids: group 5 = [1, 2, 3], group 9 = [4, 4], group 2 = [7] (alone)
RETURNS = torch.tensor([1.0, 4.0, 2.0, 3.0, 4.0, 7.0])
GROUPS = torch.tensor([5, 9, 5, 5, 9, 2])


def test_group_sizes():
    assert group_sizes(GROUPS).tolist() == [3, 2, 3, 3, 2, 1]


def test_rloo_leave_one_out_by_hand():
    adv, valid = rloo_advantages(RETURNS, GROUPS)
    # group 5: baselines (2+3)/2, (1+3)/2, (1+2)/2 = 2.5, 2, 1.5 → 1-2.5, 2-2, 3-1.5
    # group 9: 4 - 4 = 0 twice; group 2 is alone: skipped (advantage 0, not valid)
    assert adv.tolist() == pytest.approx([-1.5, 0.0, 0.0, 1.5, 0.0, 0.0])
    assert valid.tolist() == [True, True, True, True, True, False]
    assert adv.dtype == RETURNS.dtype


def test_rloo_equals_scaled_mean_centring():
    torch.manual_seed(0)
    r = torch.randn(12, dtype=torch.float64)
    g = torch.arange(12) // 4
    adv, _ = rloo_advantages(r, g)
    mean = r.view(3, 4).mean(1).repeat_interleave(4)
    torch.testing.assert_close(adv, 4 / 3 * (r - mean))


def test_grpo_group_normalised_by_hand():
    r = torch.tensor([1.0, 4.0, 2.0, 3.0, 4.0, 7.0, 0.0, 10.0])
    g = torch.tensor([5, 9, 5, 5, 9, 2, 3, 3])
    adv, valid = grpo_advantages(r, g, eps=1e-4)
    # group 5: mean 2, sample std 1 → ±1/(1+eps); group 9 all equal → 0; group 2 alone → skipped;
    # group 3: mean 5, sample std sqrt(50) → ±5/(sqrt(50)+eps)
    s = 5 / (math.sqrt(50) + 1e-4)
    expected = [-1 / 1.0001, 0.0, 0.0, 1 / 1.0001, 0.0, 0.0, -s, s]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)
    assert valid.tolist() == [True, True, True, True, True, False, True, True]


@pytest.mark.parametrize("fn", [rloo_advantages, grpo_advantages])
def test_all_equal_group_is_exactly_zero_and_no_nan(fn):
    r = torch.tensor([0.1, 0.1, 0.1, -3.7, -3.7, 0.3])  # 0.1 * 3 is not 0.3 in floating point
    g = torch.tensor([0, 0, 0, 1, 1, 2])
    adv, valid = fn(r, g)
    assert torch.equal(adv, torch.zeros_like(r))
    assert not torch.isnan(adv).any()
    assert valid.tolist() == [True] * 5 + [False]


@pytest.mark.parametrize("fn", [rloo_advantages, grpo_advantages])
def test_every_group_of_size_one(fn):
    adv, valid = fn(torch.tensor([1.0, -2.0]), torch.tensor([0, 1]))
    assert adv.tolist() == [0.0, 0.0] and valid.tolist() == [False, False]


@pytest.mark.parametrize("fn", [rloo_advantages, grpo_advantages])
def test_empty_batch(fn):
    adv, valid = fn(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert adv.shape == (0,) and valid.shape == (0,)


def test_rloo_baseline_is_independent_of_own_return():
    """Changing R_i moves A_i one-for-one (the baseline ignores i) and the others by -1/(n-1)."""
    r = torch.tensor([1.0, 2.0, 3.0, 5.0])
    g = torch.zeros(4, dtype=torch.long)
    a0, _ = rloo_advantages(r, g)
    a1, _ = rloo_advantages(r + torch.tensor([3.0, 0, 0, 0]), g)
    assert (a1 - a0).tolist() == pytest.approx([3.0, -1.0, -1.0, -1.0])


def test_bad_input_raises():
    with pytest.raises(ValueError, match="equal shape"):
        rloo_advantages(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="integers"):
        grpo_advantages(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        rloo_advantages(torch.tensor([1.0, float("nan")]), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="eps"):
        grpo_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), eps=0.0)


def test_rloo_per_step_returns_by_hand():
    # group 0: three episodes with reward-to-go by step (0 after the end); group 1: one episode (skipped)
    g_to_go = torch.tensor([[3.0, 2.0, 0.0], [1.0, 1.0, 1.0], [2.0, 0.0, 0.0], [5.0, 4.0, 3.0]])
    adv, valid = rloo_advantages(g_to_go, torch.tensor([0, 0, 0, 1]))
    # step 0: 3-(1+2)/2, 1-(3+2)/2, 2-(3+1)/2; step 1: 2-(1+0)/2, 1-(2+0)/2, 0-(2+1)/2; step 2: 0-.5, 1-0, 0-.5
    expected = [[1.5, 1.5, -0.5], [-1.5, 0.0, 1.0], [0.0, -1.5, -0.5], [0.0, 0.0, 0.0]]
    torch.testing.assert_close(adv, torch.tensor(expected))
    assert valid.tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="one return per episode"):
        grpo_advantages(g_to_go, torch.tensor([0, 0, 0, 1]))
