"""The algorithm registry: the one place an algorithm is named and described.

An algorithm is one :class:`AlgoSpec` row of :data:`ALGOS` plus its advantage estimator
(:mod:`agents.estimators`). :meth:`agents.agent.Agent.update` reads only the row, never the name,
so adding an algorithm is adding a row (and, if no existing estimator fits, one estimator).

=========  ==========  =========  =============  ==============  ==============  =================
algo       estimator   clipped    value head     ``norm_adv``    aggregation     Monte-Carlo carry
=========  ==========  =========  =============  ==============  ==============  =================
ppo        GAE         yes        trained        whiten          token_mean      no
reinforce  G_0 / G_t   no         if baseline    scale by std    constant        episodes
rloo       leave-1-out no         no             scale by std    constant        groups
grpo       group norm  yes        no             none            token_mean      groups
rebn       ReBN G_t    no         no             none            constant        episodes
=========  ==========  =========  =============  ==============  ==============  =================

"clipped" algorithms use PPO's clipped surrogate on ``ρ = exp(log π_θ - log π_old)``, several epochs
and an optimizer step per minibatch; the others take one gradient step per rollout. "aggregation" is
the default of ``AgentConfig.loss_aggregation``, how the per-step loss terms are summed
(:func:`agents.losses.step_weights`): ``token_mean`` divides by the learned steps of the minibatch
(PPO; GRPO as DAPO and TRL), ``sequence_mean`` averages each episode over its steps, then the episodes
(the original GRPO), ``constant`` divides by a number fixed before the actions are drawn, the
rollout's step count (REINFORCE, RLOO, Dr. GRPO): the only one that keeps the gradient estimate
unbiased, since the others' denominators depend on the actions. Group algorithms carry finished
episodes until their whole group has finished (:mod:`agents.carry`). ``scale_rewards`` (GRPO's
division by the group std) defaults to the row's value too.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agents import estimators

if TYPE_CHECKING:
    from agents.config import AgentConfig, Rollout

AlgoName = Literal["ppo", "reinforce", "rloo", "grpo", "rebn"]
LossAggregation = Literal["token_mean", "sequence_mean", "constant"]
"""The algorithms, spelled once; every config (agent, runners) reuses this type."""
ALGO_NAMES: tuple[str, ...] = typing.get_args(AlgoName)


@dataclass(frozen=True)
class AlgoSpec:
    """How one algorithm learns from a rollout (what :meth:`Agent.update` would otherwise branch on)."""

    estimate: Callable[[Rollout, AgentConfig], estimators.Advantages]
    clipped: bool
    """PPO's clipped ratio objective, ``update_epochs`` epochs, an optimizer step per minibatch (else one
    epoch and one optimizer step per rollout, minibatches only accumulating gradients)"""
    trains_value: Callable[[AgentConfig], bool]
    """the value loss ``c_v·L_V`` enters the loss"""
    normalize: Literal["whiten", "scale", "none"]
    """what ``norm_adv`` does: ``(Â - mean) / std``, ``Â / std`` (no mean subtraction, which would be a
    hidden baseline), or nothing (GRPO's advantages are normalised already)"""
    loss_aggregation: LossAggregation
    """default of ``AgentConfig.loss_aggregation`` (see the module docstring)"""
    monte_carlo: bool
    """learn an episode once it has ended, carrying the steps of unfinished episodes (:mod:`agents.carry`)"""
    group_based: bool
    """advantages from the other episodes of a group (needs ``Rollout.group``); no critic, so no
    explained variance; the estimator's group statistics are logged instead"""
    clip_value_loss: bool = False
    """clip the value loss around the old values when ``clip_vloss`` (PPO)"""
    scale_rewards: bool = False
    """default of ``AgentConfig.scale_rewards``: divide group advantages by the group's std (GRPO)"""


ALGOS: dict[str, AlgoSpec] = {
    "ppo": AlgoSpec(estimators.gae_advantages, clipped=True, trains_value=lambda c: True, normalize="whiten",
                    loss_aggregation="token_mean", monte_carlo=False, group_based=False, clip_value_loss=True),
    "reinforce": AlgoSpec(estimators.monte_carlo_advantages, clipped=False,
                          trains_value=lambda c: c.reinforce_baseline, normalize="scale",
                          loss_aggregation="constant", monte_carlo=True, group_based=False),
    "rloo": AlgoSpec(estimators.rloo_advantages, clipped=False, trains_value=lambda c: False, normalize="scale",
                     loss_aggregation="constant", monte_carlo=True, group_based=True),
    "grpo": AlgoSpec(estimators.grpo_advantages, clipped=True, trains_value=lambda c: False, normalize="none",
                     loss_aggregation="token_mean", monte_carlo=True, group_based=True, scale_rewards=True),
    "rebn": AlgoSpec(estimators.rebn_advantages, clipped=False, trains_value=lambda c: False, normalize="none",
                     loss_aggregation="constant", monte_carlo=True, group_based=False),
}
assert tuple(ALGOS) == ALGO_NAMES, "every AlgoName has exactly one registry row"
