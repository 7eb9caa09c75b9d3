"""Sampling an action from logits: the float64 inverse-CDF sampler every rollout and ``predict`` use, and the
sampling controls (temperature, top-k, top-p) as one processed distribution (:func:`process_logits`)."""

from __future__ import annotations

import torch
from torch import Tensor

from agents.masking import apply_mask


def process_logits(
    logits: Tensor, mask: Tensor | None = None, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> tuple[Tensor, Tensor | None]:
    """The distribution the policy samples from: logits (N, A) float32 and the allowed actions (N, A) bool.

    As ``transformers``' sampling: the env's ``mask`` first, then the logits divided by ``temperature``, then
    ``top_k`` (0: off) keeps the k most likely actions (ties with the k-th kept), then ``top_p`` (1: off) keeps
    the smallest set of most likely actions whose probability reaches ``top_p`` (the most likely always kept).
    Returns the tempered logits and the kept set (None when nothing is masked). The update re-applies the
    temperature and the stored kept set to its own logits (the masked-distribution rule of
    :mod:`agents.masking`), so rollout and update log-probs, entropy and KL come from the same distribution.
    """
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    keep = mask
    if top_k > 0 and top_k < z.shape[-1]:
        kth = torch.topk(apply_mask(z, keep), top_k, dim=-1).values[:, -1:]  # (N, 1)
        top = z >= kth
        keep = top if keep is None else keep & top
    if top_p < 1.0:
        probs = torch.softmax(apply_mask(z, keep), dim=-1)  # (N, A)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # (N, A) probability of the more likely actions
        nucleus = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, order, before < top_p)
        keep = nucleus if keep is None else keep & nucleus
    return z, keep


def sample(
    logits: Tensor, greedy: bool = False, mask: Tensor | None = None, generator: torch.Generator | None = None,
    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
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
    (``benchmarks/sampling_speed.py``). ``temperature``, ``top_k`` and ``top_p``: :func:`process_logits`
    (both results then come from the processed distribution; :func:`sample_processed` also returns its kept set).
    """
    return sample_processed(logits, greedy, mask, generator, temperature, top_k, top_p)[:2]


def sample_processed(
    logits: Tensor, greedy: bool = False, mask: Tensor | None = None, generator: torch.Generator | None = None,
    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """:func:`sample`, plus the allowed actions (N, A) bool of the processed distribution (None: all), which the
    rollout stores so that the update evaluates the same distribution."""
    z, mask = process_logits(logits, mask, temperature, top_k, top_p)
    logp = torch.log_softmax(apply_mask(z, mask), dim=-1)  # (N, A)
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
    return actions, logp.gather(1, actions.unsqueeze(1)).squeeze(1), mask
