"""Returns, GAE and losses against numbers worked out by hand."""

import math

import numpy as np
import pytest
import torch

from agents import losses
from agents.returns import batch_normalize, complete_episode_mask, episode_returns, gae, rewards_to_go


def col(*xs, dtype=torch.float32):
    """A (T, 1) tensor from a list of values."""
    return torch.tensor(xs, dtype=dtype).reshape(-1, 1)


def flags(*xs):
    return col(*xs, dtype=torch.bool)


def test_rewards_to_go_and_episode_return_by_hand():
    # one env: episode A = steps 0..2 (terminates at 2), step 3 is the reset step, episode B = 4..5 (running)
    r = col(1.0, 2.0, 3.0, 0.0, 5.0, 6.0)
    term = flags(0, 0, 1, 0, 0, 0)
    trunc = flags(0, 0, 0, 0, 0, 0)
    start = flags(1, 0, 0, 0, 1, 0)
    g = 0.5
    # A: G2 = 3, G1 = 2 + .5*3 = 3.5, G0 = 1 + .5*3.5 = 2.75; reset step: 0 + .5*G4
    # B (cut at T): G5 = 6, G4 = 5 + 3 = 8; G3 = 0 + .5*8 = 4 (masked anyway)
    expected = [2.75, 3.5, 3.0, 4.0, 8.0, 6.0]
    assert rewards_to_go(r, term, trunc, g).squeeze(1).tolist() == pytest.approx(expected)
    ep = episode_returns(r, term, trunc, start, g).squeeze(1).tolist()
    assert ep[:3] == pytest.approx([2.75] * 3)
    assert ep[4:] == pytest.approx([8.0, 8.0])


def test_complete_episode_mask():
    term = flags(0, 0, 1, 0, 0, 0)
    trunc = flags(0, 0, 0, 0, 0, 0)
    start = flags(0, 0, 0, 0, 1, 0)  # episode A began before the rollout
    to_go = complete_episode_mask(term, trunc, start, need_start=False).squeeze(1).tolist()
    whole = complete_episode_mask(term, trunc, start, need_start=True).squeeze(1).tolist()
    assert to_go == [True, True, True, False, False, False]  # B has no end yet
    assert whole == [False, False, False, False, False, False]  # A has no start, B no end


def test_gae_reward_only_at_end_constant_value():
    # 3-step episode, reward 1 at the end, V = 0.5 everywhere, γ = 0.9, λ = 0.8
    r = col(0.0, 0.0, 1.0)
    v = col(0.5, 0.5, 0.5, 0.5)  # (T+1, 1): last is the reset obs value, cut by termination
    term, trunc = flags(0, 0, 1), flags(0, 0, 0)
    adv, ret = gae(r, v, term, trunc, gamma=0.9, gae_lambda=0.8)
    # δ0 = 0 + .9*.5 - .5 = -0.05 ; δ1 = -0.05 ; δ2 = 1 - .5 = 0.5 (no bootstrap)
    # Â2 = 0.5 ; Â1 = -0.05 + .72*0.5 = 0.31 ; Â0 = -0.05 + .72*0.31 = 0.1732
    assert adv.squeeze(1).tolist() == pytest.approx([0.1732, 0.31, 0.5])
    assert ret.squeeze(1).tolist() == pytest.approx([0.6732, 0.81, 1.0])


def test_gae_truncation_bootstraps_termination_does_not():
    # two envs, one step each, same reward 1, V(s0) = 0, V(final obs) = 10, γ = 0.5
    r = torch.tensor([[1.0, 1.0]])
    v = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    term = torch.tensor([[True, False]])
    trunc = torch.tensor([[False, True]])
    adv, _ = gae(r, v, term, trunc, gamma=0.5, gae_lambda=0.95)
    assert adv[0].tolist() == pytest.approx([1.0, 6.0])  # terminated: 1 ; truncated: 1 + .5*10


def test_gae_does_not_leak_across_episode_end():
    # step 0 truncated, step 1 is the reset step, step 2 a new episode: Â0 must not see step 1/2
    r = col(1.0, 0.0, 2.0)
    v = col(0.0, 4.0, 1.0, 3.0)  # V(final obs of ep 1) = 4 is read by step 0's bootstrap
    term, trunc = flags(0, 0, 0), flags(1, 0, 0)
    adv, _ = gae(r, v, term, trunc, gamma=0.5, gae_lambda=1.0)
    assert adv[0, 0].item() == pytest.approx(1.0 + 0.5 * 4.0)
    assert adv[2, 0].item() == pytest.approx(2.0 + 0.5 * 3.0 - 1.0)  # running at T: bootstrap V(o_T)


def test_gae_with_lambda_one_equals_discounted_return_minus_value():
    torch.manual_seed(0)
    r = torch.randn(7, 3)
    v = torch.randn(8, 3)
    term = torch.zeros(7, 3, dtype=torch.bool)
    term[6] = True
    trunc = torch.zeros_like(term)
    adv, _ = gae(r, v, term, trunc, gamma=0.9, gae_lambda=1.0)
    mc = rewards_to_go(r, term, trunc, gamma=0.9)
    assert torch.allclose(adv, mc - v[:-1], atol=1e-5)


def test_shape_errors():
    with pytest.raises(ValueError, match="values must be"):
        gae(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool),
            torch.zeros(3, 2, dtype=torch.bool), 0.9, 0.9)
    with pytest.raises(ValueError, match="expected \\(T, N\\)"):
        rewards_to_go(torch.zeros(3), torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool), 0.9)


def test_ppo_clip_loss_by_hand():
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    ratio = torch.tensor([1.5, 0.5, 1.5, 0.5])
    old = torch.zeros(4)
    loss, rho = losses.ppo_clip_loss(ratio.log(), old, adv, clip_coef=0.2)
    # terms min(ρA, clip(ρ)A): A>0,ρ=1.5 → 1.2 ; A>0,ρ=.5 → .5 ; A<0,ρ=1.5 → -1.5 ; A<0,ρ=.5 → -0.8
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 1.5 - 0.8) / 4)
    assert losses.clip_fraction(rho, 0.2).item() == 1.0


def test_value_loss_clipped_by_hand():
    v, old, target = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([3.0])
    assert losses.value_loss(v, old, target, None).item() == pytest.approx(0.5)
    # clipped prediction 0 + clip(2, ±0.5) = 0.5 → (0.5-3)² = 6.25 > 1 → 0.5*6.25
    assert losses.value_loss(v, old, target, 0.5).item() == pytest.approx(3.125)


def test_reinforce_loss_gradient_is_policy_gradient():
    logits = torch.zeros(2, 3, requires_grad=True)
    dist = torch.distributions.Categorical(logits=logits)
    actions = torch.tensor([0, 2])
    psi = torch.tensor([2.0, -1.0])
    losses.reinforce_loss(dist.log_prob(actions), psi).backward()
    # d(-mean(ψ log softmax_a))/dz_j = -ψ (1[j=a] - 1/3) / 2
    expected = torch.tensor([[-2 / 3, 1 / 3, 1 / 3], [-1 / 6, -1 / 6, 1 / 3]])
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_approx_kl_and_explained_variance():
    lp = torch.tensor([math.log(0.5)])
    assert losses.approx_kl(lp, torch.zeros(1)).item() == pytest.approx((0.5 - 1) - math.log(0.5))
    y = torch.tensor([1.0, 2.0, 3.0])
    assert losses.explained_variance(y, y) == pytest.approx(1.0)
    assert np.isnan(losses.explained_variance(y, torch.ones(3)))


def test_batch_normalize_by_hand():
    x = torch.tensor([[1.0, 100.0], [3.0, 5.0]])  # (T, N)
    mask = torch.tensor([[True, False], [True, True]])  # 100 is outside the batch: no effect on the statistics
    # mean 3, std (Bessel) √((4 + 0 + 4) / 2) = 2
    assert batch_normalize(x, mask, eps=0.0).flatten().tolist() == pytest.approx([-1.0, 0.0, 0.0, 1.0])
    # statistics of a bigger (distributed) batch: n = 4, Σx = 8, Σx² = 24 -> mean 2, std √((24 - 16) / 3)
    s = (8 / 3) ** 0.5
    got = batch_normalize(x, mask, eps=0.0, sums=torch.tensor([4.0, 8.0, 24.0]))
    assert got.flatten().tolist() == pytest.approx([-1 / s, 0.0, 1 / s, 3 / s])
    one = batch_normalize(x, torch.tensor([[False, False], [True, False]]))  # one step: only centred
    assert one.tolist() == [[0.0, 0.0], [0.0, 0.0]]
