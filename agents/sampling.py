"""Sampling an action from logits: the float64 inverse-CDF sampler every rollout and ``predict`` use."""

from __future__ import annotations

import torch
from torch import Tensor

from agents.masking import apply_mask


def sample(
    logits: Tensor, greedy: bool = False, mask: Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Sample (or argmax) actions from logits (N, A); returns actions (N,) and log π (N,).

    With ``mask`` (N, A) bool (True = allowed) both come from the masked distribution
    (:func:`agents.masking.apply_mask`), the one the update evaluates.

    Multinomial sampling at temperature 1 by inverse CDF in float64: one float64 uniform per
    row (from ``generator``) and a binary search in the float64 cumulative sum of
    ``exp(log π)``, where ``log π`` is the float32 log-softmax that is returned. Every action
    is drawn with its float32 softmax probability to double precision, including tail tokens
    far below float32 resolution of the cumulative sum (a float32 CDF at vocab 50k is off
    by total variation ~3e-4 and never draws them); actions of probability 0 are never
    drawn. Much faster than ``Categorical.sample`` at LM vocabulary sizes
    (``benchmarks/sampling_speed.py``).
    """
    logp = torch.log_softmax(apply_mask(logits.float(), mask), dim=-1)  # (N, A)
    if greedy:
        actions = logp.argmax(-1)
    else:
        cdf = logp.exp().double().cumsum_(-1)  # (N, A): float32 probabilities, float64 running sum
        total = cdf[:, -1:]  # (N, 1), 1 up to float32 rounding of the softmax
        u = torch.rand(cdf.shape[0], 1, device=cdf.device, dtype=torch.float64, generator=generator) * total
        u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total, even after rounding
        actions = torch.searchsorted(cdf, u, right=True).squeeze(1)  # (N,) first action with cdf > u
        if mask is not None:  # zero-probability actions have empty intervals; kept as a guard
            actions = torch.where(mask.gather(1, actions[:, None]).squeeze(1), actions, logp.argmax(-1))
    return actions, logp.gather(1, actions.unsqueeze(1)).squeeze(1)
