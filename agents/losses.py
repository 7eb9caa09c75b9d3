"""Policy-gradient losses and diagnostics as small pure functions over flat batches.

Shapes: ``B`` is the number of (valid) steps in a minibatch; every input is ``(B,)``.

- policy gradient: ``∇J = E[Σ_t ∇log π(a_t|s_t) · Â_t]`` → loss ``-mean(log π · Â)``;
- importance ratio ``ρ = exp(log π_θ - log π_old)``;
- PPO clipped surrogate: ``-min(ρ Â, clip(ρ, 1-ε, 1+ε) Â)``;
- value loss ``½ (V - target)²``, optionally clipped around the old value (PPO2 style);
- total PPO loss ``policy + c_v · value - c_e · entropy``;
- GRPO's KL term ``β · mean(exp(log π_ref - log π_θ) - (log π_ref - log π_θ) - 1)`` (k3 estimator).
"""

from __future__ import annotations

import torch
from torch import Tensor


def reinforce_loss(logprob: Tensor, advantages: Tensor) -> Tensor:
    """REINFORCE surrogate ``-mean(log π(a|s) · Ψ)`` whose gradient is the policy gradient.

    ``advantages`` (B,) is the weight Ψ: an episode return, a reward-to-go, or a
    reward-to-go minus a baseline. It is treated as a constant.
    """
    return -(logprob * advantages.detach()).mean()


def ppo_clip_loss(
    logprob: Tensor, old_logprob: Tensor, advantages: Tensor, clip_coef: float
) -> tuple[Tensor, Tensor]:
    """PPO clipped surrogate loss.

    Returns:
        (loss, ratio): ``mean(-min(ρÂ, clip(ρ, 1-ε, 1+ε)Â))`` and ``ρ`` (B,).
    """
    ratio = torch.exp(logprob - old_logprob)  # (B,)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef) * advantages
    return -torch.min(unclipped, clipped).mean(), ratio


def value_loss(
    values: Tensor, old_values: Tensor, targets: Tensor, clip_coef: float | None
) -> Tensor:
    """``½ mean((V - target)²)``; with ``clip_coef`` the PPO2 clipped variant
    ``½ mean(max((V - target)², (V_old + clip(V - V_old, ±ε) - target)²))``."""
    unclipped = (values - targets) ** 2  # (B,)
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    v_clipped = old_values + torch.clamp(values - old_values, -clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (v_clipped - targets) ** 2).mean()


def approx_kl(logprob: Tensor, old_logprob: Tensor) -> Tensor:
    """Low-variance estimator of KL(π_old || π_θ): ``mean((ρ - 1) - log ρ)`` (Schulman)."""
    log_ratio = logprob - old_logprob
    return ((torch.exp(log_ratio) - 1.0) - log_ratio).mean()


def k3_kl(logprob: Tensor, ref_logprob: Tensor) -> Tensor:
    """GRPO's KL penalty: mean of ``k3 = exp(log π_ref - log π_θ) - (log π_ref - log π_θ) - 1`` (B,) → ().

    With ``a ~ π_θ`` it is an unbiased, always non-negative estimate of KL(π_θ || π_ref) (Schulman's
    k3), and its gradient in ``log π_θ`` is ``1 - π_ref/π_θ`` (zero where the two agree).
    """
    log_ratio = ref_logprob.detach() - logprob  # (B,)
    return (torch.exp(log_ratio) - log_ratio - 1.0).mean()


def clip_fraction(ratio: Tensor, clip_coef: float) -> Tensor:
    """Fraction of steps whose ratio lies outside ``[1-ε, 1+ε]``."""
    return ((ratio - 1.0).abs() > clip_coef).float().mean()


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """``1 - Var[target - prediction] / Var[target]`` (nan when the targets are constant)."""
    var_y = targets.var(unbiased=False)
    if var_y.item() == 0.0:
        return float("nan")
    return float(1.0 - (targets - predictions).var(unbiased=False) / var_y)


def normalize(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Zero-mean, unit-std copy of ``x`` (returns ``x - mean`` when it has one element)."""
    if x.numel() < 2:
        return x - x.mean()
    return (x - x.mean()) / (x.std() + eps)
