"""Advantage estimators, one per algorithm family: what each algorithm weights ``∇log π(a_t|s_t)`` by.

Every estimator maps a :class:`~agents.config.Rollout` ``(T, N)`` and the agent's config to
:class:`Advantages`: the advantages ``Â_t``, the value targets (PPO) or returns (logged), the mask of
steps that enter the loss and the statistics it wants logged. The registry
(:data:`agents.algos.ALGOS`) says which estimator an algorithm uses.

- :func:`gae_advantages` (PPO): GAE(γ, λ), ``δ_t = r_t + γV(s_{t+1}) - V(s_t)``,
  ``Â_t = δ_t + γλÂ_{t+1}``; targets ``Â_t + V(s_t)``; every valid step is learned.
- :func:`monte_carlo_advantages` (REINFORCE): the episode return ``G_0`` or the reward-to-go
  ``G_t``, minus the baseline ``V(s_t)`` when ``reinforce_baseline``; only steps of episodes
  that end inside the rollout (and, for ``G_0``, began in it) are learned.
- :func:`rloo_advantages` / :func:`grpo_advantages` (group baselines, see :mod:`agents.group`):
  each episode's advantage from the other episodes of its fixed-size group, on all its steps, once
  the whole group has finished (:func:`group_advantages`).
- :func:`rebn_advantages` (ReBN, GEM's REINFORCE with return batch normalisation): the reward-to-go ``G_t``
  whitened over the learned steps of the whole batch, on the steps of complete episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from agents import group, parallel
from agents.batch import flatten, unflatten
from agents.returns import (
    batch_normalize,
    complete_episode_mask,
    episode_returns,
    gae,
    rewards_to_go,
    started_in_rollout,
)

if TYPE_CHECKING:
    from agents.config import AgentConfig, Rollout


@dataclass(frozen=True)
class Advantages:
    """What an estimator hands the loss: ``(T, N)`` tensors and the statistics to log."""

    adv: Tensor  # (T, N) Â_t (0 where not learned)
    targets: Tensor  # (T, N) value targets (PPO, REINFORCE's baseline) or returns (logged)
    mask: Tensor  # (T, N) bool: steps that enter the loss
    stats: dict[str, float] = field(default_factory=dict)
    carry: Tensor | None = None  # (T, N) bool: steps to carry to the next rollout (None: the unfinished episodes)


def gae_advantages(ro: Rollout, c: AgentConfig) -> Advantages:
    """PPO: GAE(γ, λ) on every valid step (reset steps are masked out, truncations bootstrapped)."""
    adv, targets = gae(ro.rewards, ro.values, ro.terminated, ro.truncated, c.gamma, c.gae_lambda)
    return Advantages(adv, targets, ro.valid)


def monte_carlo_advantages(ro: Rollout, c: AgentConfig) -> Advantages:
    """REINFORCE: ``Ψ_t = G_0``, ``G_t`` or ``G_t - V(s_t)`` on the steps of complete episodes."""
    if c.reinforce_return == "episode":
        ret = episode_returns(ro.rewards, ro.terminated, ro.truncated, ro.episode_start, c.gamma)
    else:
        ret = rewards_to_go(ro.rewards, ro.terminated, ro.truncated, c.gamma)
    mask = ro.valid & complete_episode_mask(
        ro.terminated, ro.truncated, ro.episode_start, need_start=c.reinforce_return == "episode"
    )
    adv = ret - ro.values[:-1] if c.reinforce_baseline else ret
    return Advantages(adv, ret, mask)


def rebn_advantages(ro: Rollout, c: AgentConfig) -> Advantages:
    """ReBN: ``Ψ_t = (G_t - mean_B G) / (std_B G + 1e-8)``, the reward-to-go normalised over the learned steps of
    the whole batch (every rank's), on the steps of complete episodes; no critic. With dense per-turn rewards the
    normalised reward-to-go is a baseline-free, scale-free weight (GEM's ReBN); ``norm_adv`` does not apply."""
    ret = rewards_to_go(ro.rewards, ro.terminated, ro.truncated, c.gamma)  # (T, N)
    mask = ro.valid & complete_episode_mask(ro.terminated, ro.truncated, ro.episode_start, need_start=False)
    sel = ret[mask].double()  # (M,)
    sums = parallel.global_sum(sel.numel(), sel.sum(), sel.square().sum(), device=ret.device)  # (3,)
    return Advantages(batch_normalize(ret, mask, sums=sums), ret, mask)


@dataclass(frozen=True)
class _Episodes:
    """The episodes of a rollout in column-major step order (``S = N*T`` steps, ``K`` episodes)."""

    eid: Tensor  # (S,) episode index of every step
    first: Tensor  # (E,) first steps of the complete episodes
    count: int  # K, every episode (complete or not)


def _episodes(ro: Rollout, mask: Tensor) -> _Episodes:
    start = ro.episode_start.clone()
    start[0] = True
    eid = torch.cumsum(flatten(start).long(), 0) - 1  # (S,)
    first = torch.nonzero(flatten(start) & flatten(mask)).squeeze(1)  # (E,)
    return _Episodes(eid, first, int(eid[-1].item()) + 1)


def _per_step_rloo(
    ro: Rollout, c: AgentConfig, ep: _Episodes, mask: Tensor, groups: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """RLOO with reward-to-go: step τ of episode i gets ``G_{i,τ} - mean_{j≠i} G_{j,τ}`` ((S,), (E,), (T, N))."""
    eid, first, dev = ep.eid, ep.first, ep.eid.device
    pos = torch.arange(eid.numel(), device=dev)
    first_pos = torch.zeros(ep.count, dtype=torch.long, device=dev).index_copy_(0, eid[first], first)
    tau = pos - first_pos[eid]  # (S,) step index inside the episode (valid where mask)
    steps = torch.nonzero(flatten(mask)).squeeze(1)
    row = torch.full((ep.count,), -1, dtype=torch.long, device=dev)
    row[eid[first]] = torch.arange(first.numel(), device=dev)  # episode -> row of the (E, L) table
    L = int(tau[steps].max().item()) + 1 if steps.numel() else 1
    to_go = rewards_to_go(ro.rewards, ro.terminated, ro.truncated, c.gamma)  # (T, N)
    table = torch.zeros(first.numel(), L, dtype=to_go.dtype, device=dev)  # (E, L), 0 after the end
    table[row[eid[steps]], tau[steps]] = flatten(to_go)[steps]
    adv_el, ok_e = group.rloo_advantages(table, flatten(groups)[first])  # (E, L), (E,)
    adv = torch.zeros_like(flatten(to_go))
    adv[steps] = adv_el[row[eid[steps]], tau[steps]]
    return adv, ok_e, to_go


GroupFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (returns (E,), group ids (E,)) -> (adv, has mates)


def _finished_groups(ro: Rollout, mask: Tensor, ep: _Episodes) -> Tensor:
    """(E,) bool: the complete episodes whose whole group (``ro.group_size`` episodes) has finished."""
    gid = flatten(ro.group)[ep.first]  # type: ignore[arg-type]  # (E,)
    count = group.group_sizes(gid)  # (E,) finished episodes of each one's group
    if bool((count > ro.group_size).any()):
        raise ValueError(
            f"a group has more than group_size={ro.group_size} finished episodes: group ids must name the e-th "
            "episode of each row of a block (collect with RolloutCollector, which assigns them)"
        )
    return count == ro.group_size


def group_advantages(ro: Rollout, c: AgentConfig, episode_fn: GroupFn, per_step: bool = False) -> Advantages:
    """RLOO/GRPO: each episode of a finished group gets its advantage from its group, on all its steps.

    A group is the e-th episode of each of the ``k = ro.group_size`` rows of a block (ids from the
    collector), fixed before any return is seen. It is learned once all ``k`` episodes have finished;
    until then its finished episodes wait in the carry (``Advantages.carry``, :mod:`agents.carry`), so
    every finished episode enters exactly one update, with the baseline of its own complete group.
    ``episode_fn`` turns the episodes' returns and group ids into advantages (RLOO's or GRPO's);
    ``per_step`` (RLOO with reward-to-go) compares reward-to-go step by step instead. Targets are the
    episode returns ``G_0`` (logged; the reward-to-go with ``per_step``). Statistics: ``group/episodes``
    (learned now), ``group/waiting`` (finished, carried until their group has finished).
    """
    if ro.group is None:
        raise ValueError(f"algo={c.algo!r} needs Rollout.group (group ids); collect with RolloutCollector")
    if ro.group_size < 2:
        raise ValueError(
            f"algo={c.algo!r} needs groups of at least 2 episodes, got Rollout.group_size={ro.group_size}: collect "
            "with RolloutCollector(..., group_size=k), k >= 2 dividing num_envs"
        )
    ret = episode_returns(ro.rewards, ro.terminated, ro.truncated, ro.episode_start, c.gamma)  # (T, N)
    started = ro.valid & started_in_rollout(ro.terminated | ro.truncated, ro.episode_start)  # (T, N)
    started &= ro.group >= 0  # idle episodes (id -1, agents.group_ids) are never learned
    complete = started & complete_episode_mask(ro.terminated, ro.truncated, ro.episode_start, need_start=False)
    ep = _episodes(ro, complete)
    ready = _finished_groups(ro, complete, ep)  # (E,)
    learned = ep.first[ready]  # first steps of the learned episodes
    ok = torch.zeros(ep.count, dtype=torch.bool, device=ret.device).index_copy_(0, ep.eid[ep.first], ready)
    unflat = lambda x: unflatten(x, *ret.shape)  # (S,) -> (T, N)
    mask = complete & unflat(ok[ep.eid])  # (T, N) steps of learned episodes
    lep = _Episodes(ep.eid, learned, ep.count)
    if per_step:
        adv, _, ret = _per_step_rloo(ro, c, lep, mask, ro.group)
    else:  # one advantage per episode, on all its steps
        adv_e, _ = episode_fn(flatten(ret)[learned], flatten(ro.group)[learned])  # (E',) each
        adv = torch.zeros(ep.count, dtype=ret.dtype, device=ret.device).index_copy_(0, ep.eid[learned], adv_e)[ep.eid]
    stats = {"group/episodes": float(learned.numel()), "group/waiting": float((~ready).sum())}
    return Advantages(unflat(adv), ret, mask, stats, carry=started & ~mask)


def rloo_advantages(ro: Rollout, c: AgentConfig) -> Advantages:
    """RLOO: ``A_i = R_i - mean_{j≠i} R_j`` (``reinforce_return="to_go"``: per step, see :func:`group_advantages`);
    with ``scale_rewards`` divided by the group's std as GRPO's."""
    if c.scales_rewards:
        return group_advantages(ro, c, lambda r, g: group.grpo_advantages(r, g, c.group_eps, True))
    return group_advantages(ro, c, group.rloo_advantages, per_step=c.reinforce_return == "to_go")


def grpo_advantages(ro: Rollout, c: AgentConfig) -> Advantages:
    """GRPO: ``A_i = (R_i - mean_g R) / (std_g R + group_eps)``."""
    return group_advantages(ro, c, lambda r, g: group.grpo_advantages(r, g, c.group_eps, c.scales_rewards))
