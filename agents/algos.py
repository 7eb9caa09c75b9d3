"""The algorithm registry: the one place an algorithm is named and described.

An algorithm is one :class:`AlgoSpec` row of :data:`ALGOS` plus its advantage estimator
(:mod:`agents.estimators`). :meth:`agents.agent.Agent.update` reads only the row, never the name,
so adding an algorithm is adding a row (and, if no existing estimator fits, one estimator).

=========  ==========  =========  =============  ==============  ===========  ======================
algo       estimator   clipped    value head     ``norm_adv``    denominator  Monte-Carlo carry
=========  ==========  =========  =============  ==============  ===========  ======================
ppo        GAE         yes        trained        whiten          minibatch    no
reinforce  G_0 / G_t   no         if baseline    scale by std    rollout      yes
rloo       leave-1-out no         no             scale by std    learned      yes
grpo       group norm  yes        no             none            minibatch    yes
=========  ==========  =========  =============  ==============  ===========  ======================

"clipped" algorithms use PPO's clipped surrogate on ``ρ = exp(log π_θ - log π_old)``, several epochs
and an optimizer step per minibatch; the others take one gradient step per rollout, their loss a sum
over the learned steps divided by the "denominator" (REINFORCE: the rollout's step count, a constant,
so the estimate stays unbiased; RLOO: the learned steps).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agents import estimators

if TYPE_CHECKING:
    from agents.config import AgentConfig, Rollout

AlgoName = Literal["ppo", "reinforce", "rloo", "grpo"]
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
    constant_denominator: bool
    """one-step algorithms: divide the summed loss by the rollout's step count (REINFORCE) instead of the
    number of learned steps, which depends on the actions"""
    monte_carlo: bool
    """learn an episode once it has ended, carrying the steps of unfinished episodes (:mod:`agents.carry`)"""
    group_based: bool
    """advantages from the other episodes of a group (needs ``Rollout.group``); no critic, so no
    explained variance; the estimator's group statistics are logged instead"""
    clip_value_loss: bool = False
    """clip the value loss around the old values when ``clip_vloss`` (PPO)"""


ALGOS: dict[str, AlgoSpec] = {
    "ppo": AlgoSpec(estimators.gae_advantages, clipped=True, trains_value=lambda c: True, normalize="whiten",
                    constant_denominator=False, monte_carlo=False, group_based=False, clip_value_loss=True),
    "reinforce": AlgoSpec(estimators.monte_carlo_advantages, clipped=False,
                          trains_value=lambda c: c.reinforce_baseline, normalize="scale",
                          constant_denominator=True, monte_carlo=True, group_based=False),
    "rloo": AlgoSpec(estimators.rloo_advantages, clipped=False, trains_value=lambda c: False, normalize="scale",
                     constant_denominator=False, monte_carlo=True, group_based=True),
    "grpo": AlgoSpec(estimators.grpo_advantages, clipped=True, trains_value=lambda c: False, normalize="none",
                     constant_denominator=False, monte_carlo=True, group_based=True),
}
assert tuple(ALGOS) == ALGO_NAMES, "every AlgoName has exactly one registry row"
