"""The loss of one minibatch, assembled from the pure terms of :mod:`agents.losses`, and the
advantage statistics it needs over all ranks.

``loss = L_pg - c_e·H + c_v·L_V [+ β·KL]`` where ``L_pg`` is PPO's clipped surrogate
``-min(ρÂ, clip(ρ, 1-ε, 1+ε)Â)`` (clipped algorithms) or REINFORCE's ``-log π(a|s)·Â``,
``H`` the entropy, ``L_V`` the (optionally clipped) value loss when the algorithm trains its value
head, and ``β·KL`` the KL-to-reference loss term of ``kl_mode="loss"`` (the ``kl_estimator``, k1/k2/k3).
Per-step terms are averaged over the minibatch, or summed with ``MinibatchTerms.weights``
(``loss_aggregation``, see :mod:`agents.algos`). A micro-batch (``micro_batch_size``) gets explicit weights and
its ``share`` of the minibatch's steps, so the sum of its micro-batches' losses is the minibatch's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from agents import losses, parallel
from agents.algos import AlgoSpec
from agents.config import AgentConfig

STAT_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "kl_loss")
"""The per-minibatch statistics :func:`minibatch_loss` returns, in this order (NaN: not computed)."""


@dataclass(frozen=True)
class MinibatchTerms:
    """The inputs of one minibatch's loss, each ``(B,)`` over its learned steps (``entropy`` a scalar)."""

    logprob: Tensor  # log π_θ(a|s), with gradient
    old_logprob: Tensor  # log π_old(a|s) from the rollout
    adv: Tensor  # Â
    values: Tensor  # V_θ(s), with gradient
    old_values: Tensor  # V_old(s)
    targets: Tensor  # value targets
    entropy: Tensor  # () aggregated entropy, with gradient
    ref_logprob: Tensor | None = None  # log π_ref(a|s) when the KL is a loss term
    weights: Tensor | None = None  # per-step weights of the sum (None: the mean over the steps)
    share: Tensor | float = 1.0
    """a micro-batch's fraction of its minibatch's learned steps: the mean terms (value loss, approx KL, clip
    fraction) are scaled by it so that the micro-batches' losses and statistics add up to the minibatch's"""


def minibatch_loss(spec: AlgoSpec, c: AgentConfig, m: MinibatchTerms, kl_coef: float) -> tuple[Tensor, Tensor]:
    """The loss to minimise and its parts ``(len(STAT_KEYS),)`` (detached, NaN where not computed)."""
    clip_v = c.clip_coef if (spec.clip_value_loss and c.clip_vloss) else None
    v_loss = losses.value_loss(m.values, m.old_values, m.targets, clip_v) * m.share
    use_value = spec.trains_value(c)
    kl = clipfrac = kl_loss = torch.full((), float("nan"), device=m.logprob.device)
    if spec.clipped:
        pg_loss, ratio = losses.ppo_clip_loss(m.logprob, m.old_logprob, m.adv, c.clip_coef, m.weights)
        with torch.no_grad():
            kl = losses.approx_kl(m.logprob, m.old_logprob) * m.share
            clipfrac = losses.clip_fraction(ratio, c.clip_coef) * m.share
    else:
        pg_loss = losses.reinforce_loss(m.logprob, m.adv, m.weights)
    loss = pg_loss - c.ent_coef * m.entropy + (c.vf_coef * v_loss if use_value else 0.0)
    if m.ref_logprob is not None:  # the KL term β·KL on the current log-probs (GRPO: k3)
        kl_loss = losses.aggregate(losses.kl_estimate(m.logprob, m.ref_logprob, c.kl_estimator), m.weights)
        loss = loss + kl_coef * kl_loss
    v_stat = v_loss if use_value else torch.full((), float("nan"), device=m.logprob.device)  # not trained
    return loss, torch.stack([pg_loss, v_stat, m.entropy, kl, clipfrac, kl_loss]).detach()


def normalize(x: Tensor, center: bool, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / std`` (``center``) or ``x / std`` over the learnable steps of ALL ranks."""
    if not parallel.is_distributed():
        if center:
            return losses.normalize(x, eps)
        return x / (x.std() + eps) if x.numel() > 1 else x
    n, s, ss = parallel.global_sum(x.numel(), x.sum(), x.double().square().sum(), device=x.device)
    mean = s / n
    std = ((ss - n * mean**2).clamp(min=0.0) / (n - 1)).sqrt() if n > 1 else None
    if center:
        return (x - mean).float() if std is None else ((x - mean) / (std + eps)).float()
    return x if std is None else (x / (std + eps)).float()


def explained_variance(pred: Tensor, target: Tensor) -> float:
    """:func:`losses.explained_variance` over the learnable steps of all ranks."""
    if not parallel.is_distributed():
        return losses.explained_variance(pred, target)
    y, r = target.double(), (target - pred).double()
    n, sy, syy, sr, srr = parallel.global_sum(y.numel(), y.sum(), y.square().sum(), r.sum(), r.square().sum(),
                                              device=y.device).tolist()
    var_y = syy / n - (sy / n) ** 2
    return float("nan") if var_y <= 0 else 1.0 - (srr / n - (sr / n) ** 2) / var_y
