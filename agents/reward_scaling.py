"""Reward scaling options of the update for reward models of any scale: TRL's ``whiten_rewards``, a running
normalisation (SB3's ``VecNormalize(norm_reward=True)``, TRL's ``use_score_scaling`` / ``use_score_norm``) and
clipping.

:func:`whiten_and_clip` is pure and works on the ``(T, N)`` learning rewards of a rollout (the KL-shaped per-step
rewards the agent learns from), over its valid steps (reset steps are left as they are; they never enter a loss).
:class:`RunningMoments` keeps the count, mean and variance of every valid learning reward seen so far; its state
is three floats, saved in checkpoints so that a resumed run normalises exactly as the uninterrupted one.
The constant ``reward_scale`` of the runner applies before both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from agents import parallel

EPS = 1e-8


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
            r = (r - mean) * torch.rsqrt(var + EPS) + mean
    if clip is not None:
        r = r.clamp(-clip, clip)
    out[valid] = r.to(out.dtype)
    return out


def merge_moments(count: float, mean: float, var: float, n: float, batch_mean: float,
                  batch_var: float) -> tuple[float, float, float]:
    """Chan et al.'s parallel merge of (count, mean, population variance) with a batch's: SB3's
    ``RunningMeanStd.update_from_moments``."""
    total = count + n
    delta = batch_mean - mean
    m2 = var * count + batch_var * n + delta * delta * count * n / total
    return total, mean + delta * n / total, m2 / total


@dataclass
class RunningMoments:
    """Running count, mean and (population) variance of the valid learning rewards of every rollout so far.

    Starts as SB3's ``RunningMeanStd(epsilon=1e-4)``: count 1e-4, mean 0, variance 1. :meth:`normalize` first
    adds the rollout's rewards (over every rank under ``torchrun``), then scales, as ``VecNormalize`` does.
    """

    count: float = 1e-4
    mean: float = 0.0
    var: float = 1.0

    def update(self, rewards: Tensor, valid: Tensor) -> None:
        """Add the ``valid`` (T, N) steps of ``rewards`` (T, N) to the moments (in float64)."""
        r = rewards[valid].double()  # (S,)
        n, s, ss = (float(x) for x in parallel.global_sum(r.numel(), r.sum(), (r * r).sum(), device=rewards.device))
        if n > 0:
            batch_mean = s / n
            batch_var = max(ss / n - batch_mean * batch_mean, 0.0)
            self.count, self.mean, self.var = merge_moments(self.count, self.mean, self.var, n, batch_mean, batch_var)

    def normalize(self, rewards: Tensor, valid: Tensor, center: bool, clip: float | None = None) -> Tensor:
        """Update with this rollout, then a copy of ``rewards`` (T, N) with every valid step divided by the running
        ``sqrt(var + 1e-8)`` (``center``: after subtracting the running mean), then clipped to ``[-clip, clip]``."""
        self.update(rewards, valid)
        out = rewards.clone()  # (T, N)
        r = rewards[valid].double()  # (S,)
        r = ((r - self.mean) if center else r) / math.sqrt(self.var + EPS)
        if clip is not None:
            r = r.clamp(-clip, clip)
        out[valid] = r.to(out.dtype)
        return out

    def state_dict(self) -> dict[str, float]:
        """The three floats (JSON round-trips them exactly)."""
        return {"count": self.count, "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore :meth:`state_dict`; a clear error for anything else."""
        try:
            count, mean, var = (float(state[k]) for k in ("count", "mean", "var"))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"running reward moments need count, mean and var, got {state!r}") from None
        if not (count > 0 and var >= 0 and math.isfinite(mean) and math.isfinite(var) and math.isfinite(count)):
            raise ValueError(f"running reward moments must be finite with count > 0 and var >= 0, got {state!r}")
        self.count, self.mean, self.var = count, mean, var
