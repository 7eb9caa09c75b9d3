"""Rollouts built by hand for the agent tests (imported by them, not collected)."""

from __future__ import annotations

import torch

from agents.config import Rollout


def hand_rollout() -> Rollout:
    """T = 5 steps of N = 4 rows, groups = row // 2, γ = 1.

    row 0: episode A (t0-t1, R = 1), reset step t2, episode B (t3-t4, R = 3)
    row 1: episode C (t0-t2, R = 2), reset step t3, episode D starts at t4 (unfinished)
    row 2: episode E (t0-t4, R = 5)
    row 3: an episode begun before the rollout ends at t1, reset t2, episode F (t3-t4, unfinished)
    Group 0 holds A, B, C; in group 1 only E is complete (alone: skipped).
    """
    T, N = 5, 4
    r = torch.zeros(T, N)
    term = torch.zeros(T, N, dtype=torch.bool)
    start = torch.zeros(T, N, dtype=torch.bool)
    valid = torch.ones(T, N, dtype=torch.bool)
    r[1, 0], term[1, 0], valid[2, 0], start[[0, 3], 0], r[4, 0], term[4, 0] = 1, True, False, True, 3, True
    r[2, 1], term[2, 1], valid[3, 1], start[[0, 4], 1] = 2, True, False, True
    r[4, 2], term[4, 2], start[0, 2] = 5, True, True
    r[1, 3], term[1, 3], valid[2, 3], start[3, 3] = 7, True, False, True
    group = (torch.arange(N) // 2).expand(T, N).clone()
    return Rollout(obs=torch.zeros(T, N, 2, dtype=torch.long), actions=torch.zeros(T, N, dtype=torch.long),
                   logprobs=torch.zeros(T, N), values=torch.zeros(T + 1, N), rewards=r, terminated=term,
                   truncated=torch.zeros(T, N, dtype=torch.bool), episode_start=start, valid=valid, group=group)


def group_rollout() -> Rollout:
    """T = 5 steps of N = 4 rows in blocks of k = 2 (``group_size=2``), γ = 1; group id ``e * 2 + row // 2``.

    row 0: episode A (t0-t1, R = 1, group 0), reset step t2, episode B (t3-t4, R = 3, group 2)
    row 1: episode C (t0-t2, R = 2, group 0), reset step t3, episode D starts at t4 (unfinished, group 2)
    row 2: episode E (t0-t4, R = 5, group 1)
    row 3: episode G (t0-t1, R = 7, group 1), reset step t2, episode F (t3-t4, unfinished, group 3)
    Groups 0 {A, C} and 1 {E, G} have finished; B has finished but waits for D (group 2).
    """
    T, N = 5, 4
    r = torch.zeros(T, N)
    term = torch.zeros(T, N, dtype=torch.bool)
    start = torch.zeros(T, N, dtype=torch.bool)
    valid = torch.ones(T, N, dtype=torch.bool)
    r[1, 0], term[1, 0], valid[2, 0], start[[0, 3], 0], r[4, 0], term[4, 0] = 1, True, False, True, 3, True
    r[2, 1], term[2, 1], valid[3, 1], start[[0, 4], 1] = 2, True, False, True
    r[4, 2], term[4, 2], start[0, 2] = 5, True, True
    r[1, 3], term[1, 3], valid[2, 3], start[[0, 3], 3] = 7, True, False, True
    group = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [2, 0, 1, 3], [2, 2, 1, 3]])
    return Rollout(obs=torch.zeros(T, N, 2, dtype=torch.long), actions=torch.zeros(T, N, dtype=torch.long),
                   logprobs=torch.zeros(T, N), values=torch.zeros(T + 1, N), rewards=r, terminated=term,
                   truncated=torch.zeros(T, N, dtype=torch.bool), episode_start=start, valid=valid, group=group,
                   group_size=2)
