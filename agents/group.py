"""Group baselines for critic-free policy gradients: RLOO and GRPO advantages.

Both methods draw several episodes from the same start (the same prompt, or CatGrid's fixed
start cell) and use the *other* episodes of the group as the baseline, so no value network is
needed. Inputs are flat per-episode tensors: ``E`` episodes, each with its return ``R_i`` (E,)
and a group id ``g_i`` (E,) (any integers; equal ids = same group). ``n_g`` is the number of
episodes of group ``g`` in the batch.

- RLOO (REINFORCE leave-one-out; Ahmadian et al. 2024, "Back to Basics"): the baseline of
  episode ``i`` is the mean return of the other episodes of its group,

      b_i = (Σ_{j∈g, j≠i} R_j) / (n_g - 1),     A_i = R_i - b_i = n_g/(n_g - 1) · (R_i - mean_g R).

  With per-step returns (reward-to-go ``G_{i,τ}`` at step τ of episode i, 0 after its end) the
  baseline is taken per step: ``A_{i,τ} = G_{i,τ} - mean_{j≠i} G_{j,τ}``.

  ``b_i`` does not depend on episode ``i``'s actions (the episodes are independent draws), so
  ``E[∇log π · b_i] = 0``: the estimate stays unbiased.
- GRPO (group relative policy optimisation; Shao et al. 2024, DeepSeekMath): the return
  normalised inside its group,

      A_i = (R_i - mean_g R) / (std_g R + ε)      (std with Bessel's correction, as TRL);

  ``scale=False`` (Dr. GRPO; Liu et al. 2025) keeps ``A_i = R_i - mean_g R``: the std division
  weights groups by ``1/std``, which depends on the actions and moves the fixed point of the
  update away from the optimum (docs/algorithms.md).

Groups with a single episode in the batch (``n_g = 1``) have no other sample to compare with:
their advantage is 0 and their ``valid`` flag is False, so the caller leaves them out of the
loss (they are *skipped*, never given a baseline of 0 and never NaN). A group whose returns are
all equal gets advantage exactly 0 (no signal, no NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _group_stats(returns: Tensor, group: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per episode: its return shifted by its group's minimum ``x_i = R_i - min_g R`` and the
    count n_g, sum Σ x and sum of squares Σ x² of its group, float64 shaped like ``returns``
    (``(E,)``, or ``(E, L)`` with the group statistics taken per column).

    The shift changes no advantage but makes an all-equal group exactly 0 (x_i = 0 exactly).
    """
    if returns.dim() not in (1, 2) or group.dim() != 1 or group.shape[0] != returns.shape[0]:
        raise ValueError(
            f"returns must be (E,) or (E, L) and group (E,) with equal equal shape[0], got {tuple(returns.shape)} "
            f"and {tuple(group.shape)}"
        )
    if group.dtype.is_floating_point or group.dtype == torch.bool:
        raise TypeError(f"group ids must be integers, got dtype {group.dtype}")
    if not torch.isfinite(returns).all():
        raise ValueError("returns must be finite (got NaN or inf)")
    _, dense = torch.unique(group, return_inverse=True)  # (E,) in [0, G)
    G = int(dense.max().item()) + 1 if dense.numel() else 0
    r = returns.to(torch.float64)  # (E,) or (E, L)
    zeros = torch.zeros((G, *r.shape[1:]), dtype=torch.float64, device=r.device)  # (G,) or (G, L)
    index = dense.view(-1, *([1] * (r.dim() - 1))).expand_as(r)
    low = zeros.clone().scatter_reduce_(0, index, r, "amin", include_self=False)  # min_g R
    x = r - low[dense]
    count = zeros.clone().index_add_(0, dense, torch.ones_like(x))
    total = zeros.clone().index_add_(0, dense, x)
    sq = zeros.clone().index_add_(0, dense, x * x)
    return x, count[dense], total[dense], sq[dense]


def group_sizes(group: Tensor) -> Tensor:
    """n_g of every episode's group, (E,) int64."""
    _, count, _, _ = _group_stats(torch.zeros(group.shape, dtype=torch.float64, device=group.device), group)  # (E,)
    return count.long()


def rloo_advantages(returns: Tensor, group: Tensor) -> tuple[Tensor, Tensor]:
    """RLOO advantage ``A_i = R_i - mean of the other returns of i's group``.

    Args:
        returns: (E,) episode returns ``R_i``, or (E, L) per-step returns ``G_{i,τ}`` (reward-to-go at step
            τ of the episode, 0 after its end): then the baseline is per step, ``mean_{j≠i} G_{j,τ}``, still
            independent of episode i's actions.
        group: (E,) integer group ids.

    Returns:
        advantages shaped and typed like ``returns`` (0 for singleton groups) and ``valid`` (E,) bool,
        False for episodes alone in their group (leave them out of the loss).
    """
    x, count, total, _ = _group_stats(returns, group)
    valid = count > 1  # like returns (n_g repeated over the columns)
    valid_e = valid if returns.dim() == 1 else valid[:, 0]  # (E,)
    baseline = (total - x) / torch.clamp(count - 1.0, min=1.0)  # like returns
    adv = torch.where(valid, x - baseline, torch.zeros_like(x))
    return adv.to(returns.dtype), valid_e


def grpo_advantages(returns: Tensor, group: Tensor, eps: float = 1e-4, scale: bool = True) -> tuple[Tensor, Tensor]:
    """GRPO advantage ``A_i = (R_i - mean_g) / (std_g + eps)`` (sample std, n_g - 1 in the denominator),
    or ``R_i - mean_g`` without ``scale``.

    Args:
        returns: (E,) episode returns ``R_i``.
        group: (E,) integer group ids.
        eps: added to the group std (TRL's 1e-4); an all-equal group gives 0 / eps = 0.

    Returns:
        advantages (E,) (0 for singleton groups) and ``valid`` (E,) bool (False for singletons).
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if returns.dim() != 1:
        raise ValueError(f"GRPO normalises one return per episode: returns must be (E,), got {tuple(returns.shape)}")
    x, count, total, sq = _group_stats(returns, group)
    valid = count > 1
    mean = total / count
    var = torch.clamp(sq - count * mean * mean, min=0.0) / torch.clamp(count - 1.0, min=1.0)  # (E,)
    centred = x - mean  # (E,)
    adv = torch.where(valid, centred / (var.sqrt() + eps) if scale else centred, torch.zeros_like(x))
    return adv.to(returns.dtype), valid
