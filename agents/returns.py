"""Returns and advantages for a time-major rollout of N vector envs over T steps.

All functions are pure and work on ``(T, N)`` tensors laid out as Gymnasium 1.x vector envs
produce them with NEXT_STEP autoreset:

- step ``t`` saw observation ``o_t``, took ``a_t`` and received ``r_t``, ``terminated_t`` and
  ``truncated_t`` together with ``o_{t+1}``;
- when an episode ends at step ``t`` the observation ``o_{t+1}`` is its *true final*
  observation, and step ``t+1`` is a "reset step" whose action is ignored by the env. Reset
  steps carry no learning signal; the caller masks them out of the loss.

Bootstrapping therefore needs no special case: ``values[t+1] = V(o_{t+1})`` is the value of the
final observation when step ``t`` was truncated (bootstrap), and is cut by ``terminated_t``
(no bootstrap). Recursions stop at any episode end (``terminated or truncated``).

Math (γ discount, λ GAE parameter):

- rewards-to-go: ``G_t = r_t + γ G_{t+1}`` inside an episode;
- full-episode return: every step of an episode gets ``G_0`` of its episode;
- TD error: ``δ_t = r_t + γ V(s_{t+1}) (1 - terminated_t) - V(s_t)``;
- GAE: ``Â_t = δ_t + γ λ (1 - done_t) Â_{t+1}`` with ``done = terminated | truncated``;
- the value target is ``Â_t + V(s_t)`` (an estimate of ``Q(s_t, a_t)``, so ``A = Q - V``);
- return batch normalisation (ReBN): ``(G_t - mean_B G) / (std_B G + ε)`` over the batch's learned steps.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_time_major(rewards: Tensor, *others: Tensor) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"expected (T, N) tensors, got rewards of shape {tuple(rewards.shape)}")
    for other in others:
        if other.shape != rewards.shape:
            raise ValueError(
                f"shape mismatch: rewards {tuple(rewards.shape)} vs {tuple(other.shape)}"
            )


def rewards_to_go(
    rewards: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    next_return: Tensor | None = None,
) -> Tensor:
    """Discounted rewards-to-go ``G_t = r_t + γ G_{t+1}``, restarting after every episode end.

    Args:
        rewards: (T, N) rewards.
        terminated, truncated: (T, N) bool, the flags returned with ``rewards``.
        gamma: discount factor.
        next_return: (N,) return to continue from after the last step for episodes still
            running at ``T`` (default 0: the tail is cut, so those steps are incomplete).

    Returns:
        (T, N) rewards-to-go. A step's value only uses rewards of its own episode.
    """
    _check_time_major(rewards, terminated, truncated)
    done = (terminated | truncated).to(rewards.dtype)  # (T, N)
    ret = torch.zeros_like(rewards[0]) if next_return is None else next_return.to(rewards.dtype)
    out = torch.empty_like(rewards)
    for t in range(rewards.shape[0] - 1, -1, -1):
        ret = rewards[t] + gamma * (1.0 - done[t]) * ret  # (N,)
        out[t] = ret
    return out


def episode_returns(
    rewards: Tensor, terminated: Tensor, truncated: Tensor, episode_start: Tensor, gamma: float
) -> Tensor:
    """Full-episode discounted return ``G_0`` broadcast to every step of the episode.

    ``episode_start`` (T, N) bool marks steps whose observation is the first of an episode.
    The return of an episode is read at its first step, so steps of an episode that began
    before this rollout get the return of their remaining part (callers that need the exact
    ``G_0`` mask such episodes out; see :func:`complete_episode_mask`).

    Returns:
        (T, N) tensor; step ``t`` holds ``Σ_k γ^k r_k`` over its episode from its first step.
    """
    _check_time_major(rewards, terminated, truncated, episode_start)
    to_go = rewards_to_go(rewards, terminated, truncated, gamma)  # (T, N)
    out = torch.empty_like(to_go)
    current = to_go[0]
    for t in range(rewards.shape[0]):
        current = torch.where(episode_start[t], to_go[t], current)  # (N,)
        out[t] = current
    return out


def complete_episode_mask(
    terminated: Tensor, truncated: Tensor, episode_start: Tensor, need_start: bool
) -> Tensor:
    """Steps whose episode ends inside the rollout (and, if ``need_start``, also began in it).

    Monte-Carlo returns need the whole future of a step: steps of an episode still running
    at the end of the rollout have an unknown tail and are masked out. Full-episode returns
    also need the beginning, hence ``need_start``.

    Returns:
        (T, N) bool mask.
    """
    _check_time_major(terminated.float(), truncated.float(), episode_start.float())
    T = terminated.shape[0]
    done = terminated | truncated  # (T, N)
    # a step's episode ends in the rollout iff some step at or after it is an episode end
    ends_later = torch.zeros_like(done[0])  # (N,)
    mask = torch.empty_like(done)
    for t in range(T - 1, -1, -1):
        ends_later = done[t] | ends_later
        mask[t] = ends_later

    if need_start:
        mask &= started_in_rollout(done, episode_start)
    return mask


def started_in_rollout(done: Tensor, episode_start: Tensor) -> Tensor:
    """(T, N) bool: steps whose episode began inside the rollout (``done = terminated | truncated``)."""
    started = episode_start[0].clone()  # (N,)
    out = torch.empty_like(done)
    for t in range(done.shape[0]):
        if t > 0:
            started = episode_start[t] | (started & ~done[t - 1])
        out[t] = started
    return out


def gae(
    rewards: Tensor,
    values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016).

    Args:
        rewards: (T, N) rewards ``r_t``.
        values: (T + 1, N) ``V(o_t)`` for ``t = 0..T``; row ``T`` is the value of the
            observation after the last step (and ``values[t+1]`` is ``V(final obs)`` when step
            ``t`` ended an episode).
        terminated, truncated: (T, N) bool end flags of step ``t``.

    Returns:
        advantages ``Â`` (T, N) and value targets ``Â + V`` (T, N).
    """
    _check_time_major(rewards, terminated, truncated)
    if values.shape != (rewards.shape[0] + 1, rewards.shape[1]):
        raise ValueError(
            f"values must be (T + 1, N) = {(rewards.shape[0] + 1, rewards.shape[1])}, "
            f"got {tuple(values.shape)}"
        )
    not_terminal = 1.0 - terminated.to(rewards.dtype)  # (T, N)
    not_done = 1.0 - (terminated | truncated).to(rewards.dtype)  # (T, N)
    delta = rewards + gamma * values[1:] * not_terminal - values[:-1]  # (T, N)
    adv = torch.empty_like(rewards)
    last = torch.zeros_like(rewards[0])  # (N,)
    for t in range(rewards.shape[0] - 1, -1, -1):
        last = delta[t] + gamma * gae_lambda * not_done[t] * last
        adv[t] = last
    return adv, adv + values[:-1]


def batch_normalize(x: Tensor, mask: Tensor, eps: float = 1e-8, sums: Tensor | None = None) -> Tensor:
    """ReBN's return batch normalisation: ``(x - mean) / (std + eps)`` on the steps of ``mask``, 0 elsewhere.

    Args:
        x: (T, N) returns (e.g. rewards-to-go ``G_t``).
        mask: (T, N) bool, the steps the statistics cover (the learned ones).
        eps: added to the std.
        sums: (3,) ``(n, Σx, Σx²)`` over the whole batch (all ranks of a distributed update); default those of
            ``x[mask]``. The std has Bessel's correction (``n - 1``); with ``n < 2`` only the mean is subtracted.

    Returns:
        (T, N) normalised returns, 0 outside ``mask``.
    """
    _check_time_major(x, mask.to(x.dtype))
    sel = x[mask].double()  # (M,)
    n, s, ss = (torch.stack([sel.new_tensor(float(sel.numel())), sel.sum(), sel.square().sum()])
                if sums is None else sums.double())
    mean = s / n.clamp(min=1.0)
    var = ((ss - n * mean**2).clamp(min=0.0) / (n - 1.0)) if n > 1 else None
    out = sel - mean if var is None else (sel - mean) / (var.sqrt() + eps)
    return torch.zeros_like(x).masked_scatter(mask, out.to(x.dtype))
