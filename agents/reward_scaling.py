"""Reward scaling options of the update for reward models of any scale: TRL's ``whiten_rewards`` and clipping.

:func:`whiten_and_clip` is pure and works on the ``(T, N)`` learning rewards of a rollout (the KL-shaped per-step
rewards the agent learns from), over its valid steps (reset steps are left as they are; they never enter a loss).
The constant ``reward_scale`` of the runner applies before it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from agents import parallel


def whiten_and_clip(rewards: Tensor, valid: Tensor, whiten: bool = False, clip: float | None = None) -> Tensor:
    """Whitened and/or clipped copy of ``rewards`` (T, N) on the ``valid`` (T, N) bool steps.

    ``whiten``: TRL's ``masked_whiten(rewards, shift_mean=False)``: ``(r - μ) / sqrt(σ² + 1e-8) + μ`` with the
    mean μ and the unbiased variance σ² of the valid steps (over every rank under ``torchrun``): the spread
    becomes 1, the mean stays. ``clip``: then every valid reward is clipped to ``[-clip, clip]``.
    """
    out = rewards.clone()  # (T, N)
    r = rewards[valid].double()  # (S,)
    if whiten:
        n, s, ss = parallel.global_sum(r.numel(), r.sum(), (r * r).sum(), device=rewards.device)
        if n > 1:
            mean = s / n
            var = (ss / n - mean * mean).clamp_min(0) * n / (n - 1)  # unbiased, as TRL's masked_var
            r = (r - mean) * torch.rsqrt(var + 1e-8) + mean
    if clip is not None:
        r = r.clamp(-clip, clip)
    out[valid] = r.to(out.dtype)
    return out
