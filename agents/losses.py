"""Policy-gradient losses and diagnostics as small pure functions over flat batches.

Shapes: ``B`` is the number of (valid) steps in a minibatch; every input is ``(B,)``.

- policy gradient: ``∇J = E[Σ_t ∇log π(a_t|s_t) · Â_t]`` → loss ``-mean(log π · Â)``;
- importance ratio ``ρ = exp(log π_θ - log π_old)``;
- PPO clipped surrogate: ``-min(ρ Â, clip(ρ, 1-ε, 1+ε) Â)``;
- value loss ``½ (V - target)²``, optionally clipped around the old value (PPO2 style);
- total PPO loss ``policy + c_v · value - c_e · entropy``;
- the KL-to-reference loss term ``β · kl_estimate`` (k1, k2 or k3, :func:`kl_estimate`);
- loss aggregation: a mean over the steps (``weights=None``) or the weighted sum ``Σ_b w_b ℓ_b``
  (:func:`sequence_weights`: each sequence's mean, then the sequences' mean).
"""

from __future__ import annotations

import torch
from torch import Tensor


def aggregate(x: Tensor, weights: Tensor | None) -> Tensor:
    """(B,) -> (): ``mean(x)``, or ``Σ_b w_b x_b`` with ``weights`` (B,)."""
    return x.mean() if weights is None else (x * weights).sum()


def sequence_weights(seq: Tensor, num_sequences: float | Tensor | None = None) -> Tensor:
    """Weights ``w_b = 1 / (ℓ_{s(b)} · S)`` (B,) of the per-sequence mean: step b of sequence ``s(b)``
    (``seq`` (B,) integer ids) with ``ℓ_s`` steps here, ``S`` sequences (default: those in ``seq``)."""
    _, inverse, counts = torch.unique(seq, return_inverse=True, return_counts=True)
    n = counts.numel() if num_sequences is None else num_sequences
    return 1.0 / (counts[inverse].to(torch.float32) * n)


def reinforce_loss(logprob: Tensor, advantages: Tensor, weights: Tensor | None = None) -> Tensor:
    """REINFORCE surrogate ``-mean(log π(a|s) · Ψ)`` whose gradient is the policy gradient.

    ``advantages`` (B,) is the weight Ψ: an episode return, a reward-to-go, or a
    reward-to-go minus a baseline. It is treated as a constant. ``weights``: see :func:`aggregate`.
    """
    return -aggregate(logprob * advantages.detach(), weights)


def ppo_clip_loss(
    logprob: Tensor, old_logprob: Tensor, advantages: Tensor, clip_coef: float, weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """PPO clipped surrogate loss.

    Returns:
        (loss, ratio): ``mean(-min(ρÂ, clip(ρ, 1-ε, 1+ε)Â))`` and ``ρ`` (B,).
    """
    ratio = torch.exp(logprob - old_logprob)  # (B,)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef) * advantages
    return -aggregate(torch.min(unclipped, clipped), weights), ratio


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


def kl_estimate(logprob: Tensor, ref_logprob: Tensor, estimator: str = "k3") -> Tensor:
    """Per-step estimators of KL(π_θ ‖ π_ref) from ``a ~ π_θ`` (Schulman's k1, k2, k3), (B,) -> (B,).

    With ``x = log π_θ(a) - log π_ref(a)`` (``ref_logprob`` treated as a constant) and ``a ~ π_θ``:

    - ``k1 = x``: value unbiased for KL(π_θ‖π_ref); expected gradient ``E[∇log π_θ] = 0`` (as a loss term
      it does nothing on average; it belongs in the reward, ``kl_mode="reward"``);
    - ``k2 = ½x²``: value biased (``½E[x²]``, KL to second order); expected gradient
      ``E[x ∇log π_θ] = ∇KL(π_θ‖π_ref)``, the reverse KL's exact gradient;
    - ``k3 = e^{-x} + x - 1``: value unbiased for KL(π_θ‖π_ref) and never negative; expected gradient
      ``E[(1 - π_ref/π_θ) ∇log π_θ] = -Σ_a π_ref ∇log π_θ = ∇KL(π_ref‖π_θ)``, the FORWARD KL's gradient
      (GRPO's choice; tests/agents/test_kl_estimators.py checks all six claims by enumeration).
    """
    x = logprob - ref_logprob.detach()  # (B,)
    if estimator == "k1":
        return x
    if estimator == "k2":
        return 0.5 * x * x
    if estimator == "k3":
        return torch.exp(-x) + x - 1.0
    raise ValueError(f"kl_estimator must be 'k1', 'k2' or 'k3', got {estimator!r}")


def k3_kl(logprob: Tensor, ref_logprob: Tensor) -> Tensor:
    """GRPO's KL penalty: the mean of :func:`kl_estimate` k3, (B,) → ()."""
    return kl_estimate(logprob, ref_logprob, "k3").mean()


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
