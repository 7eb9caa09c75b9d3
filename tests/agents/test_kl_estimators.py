"""The KL estimators of ``kl_mode="loss"`` (agents/losses.py ``kl_estimate``): what each one's value estimates
and what its expected gradient is, checked by exact enumeration over a small categorical ``a ~ π_θ``."""

from __future__ import annotations

import pytest
import torch

from agents import losses

THETA = torch.tensor([0.3, -1.2, 0.8, 0.1], dtype=torch.float64)  # logits of π_θ
REF = torch.log_softmax(torch.tensor([-0.5, 0.4, 0.2, -0.9], dtype=torch.float64), -1)  # log π_ref


def _expected(estimator: str) -> tuple[float, torch.Tensor]:
    """E_{a~π_θ}[k(a)] and the expected gradient E_{a~π_θ}[∇_θ k(a)] (the sampling distribution held fixed),
    both by summing over the 4 actions."""
    theta = THETA.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)  # (A,)
    k = losses.kl_estimate(logp, REF, estimator)  # (A,) the estimate at each action
    prob = logp.exp().detach()
    value = (prob * k).sum()
    (grad,) = torch.autograd.grad(value, theta)  # Σ_a π(a) ∇k(a): on-policy samples, the loss's gradient
    return float(value.detach()), grad


def _kl_and_grad(forward: bool) -> tuple[float, torch.Tensor]:
    """KL(π_θ‖π_ref) (``forward=False``) or KL(π_ref‖π_θ) and its exact gradient in θ."""
    theta = THETA.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    kl = (REF.exp() * (REF - logp)).sum() if forward else (logp.exp() * (logp - REF)).sum()
    (grad,) = torch.autograd.grad(kl, theta)
    return float(kl.detach()), grad


def test_k1_value_is_the_kl_and_its_expected_gradient_is_zero():
    value, grad = _expected("k1")
    assert value == pytest.approx(_kl_and_grad(forward=False)[0], abs=1e-12)
    torch.testing.assert_close(grad, torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)


def test_k2_value_is_biased_but_its_expected_gradient_is_the_reverse_kl_gradient():
    value, grad = _expected("k2")
    kl, kl_grad = _kl_and_grad(forward=False)
    assert abs(value - kl) > 1e-3  # ½E[x²] is not the KL
    torch.testing.assert_close(grad, kl_grad, atol=1e-12, rtol=0)


def test_k3_value_is_the_kl_but_its_expected_gradient_is_the_forward_kl_gradient():
    value, grad = _expected("k3")
    kl, kl_grad = _kl_and_grad(forward=False)
    _, fwd_grad = _kl_and_grad(forward=True)
    assert value == pytest.approx(kl, abs=1e-12)  # unbiased value of KL(π_θ‖π_ref)
    torch.testing.assert_close(grad, fwd_grad, atol=1e-12, rtol=0)  # ∇KL(π_ref‖π_θ) ...
    assert float((grad - kl_grad).norm()) > 1e-2  # ... not ∇KL(π_θ‖π_ref)


def test_estimators_by_hand_and_bad_name():
    logp, ref = torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.2]))
    x = torch.log(torch.tensor(2.0))  # log π_θ/π_ref of the first step; 0 for the second
    torch.testing.assert_close(losses.kl_estimate(logp, ref, "k1"), torch.stack([x, torch.tensor(0.0)]))
    torch.testing.assert_close(losses.kl_estimate(logp, ref, "k2"), torch.stack([0.5 * x * x, torch.tensor(0.0)]))
    torch.testing.assert_close(losses.kl_estimate(logp, ref, "k3"), torch.stack([0.5 + x - 1, torch.tensor(0.0)]))
    with pytest.raises(ValueError, match="kl_estimator"):
        losses.kl_estimate(logp, ref, "k4")
