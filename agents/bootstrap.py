"""The policy output after a rollout's last step: only the values GAE reads, for networks with state.

After the last step ``T - 1`` the collector needs ``V(o_T)`` to bootstrap the rows still running (and the rows
whose last step was truncated). It never reads the output of a row that STARTS an episode at ``o_T``: its step
``T - 1`` was a reset step, masked out of the loss and cut from the advantage recursion (its episode ended at
step ``T - 2``). A network with state (the LM policy's KV cache, ``reset_state``) forgets everything at the next
rollout's ``refresh()``, which recomputes every row with the new weights, so nothing else reads that output
either. Decoding those rows as continuing rows (one batched token each) instead of prefilling their new prompts
then saves a prefill of up to every row per rollout, the same prompts ``refresh()`` prefills again; their values
are set to 0, what they are when every row starts (the collector then computes nothing at all).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["last_step_output"]


def last_step_output(
    policy_step: Callable[[Any, np.ndarray], tuple[torch.Tensor, torch.Tensor]], obs: Any, episode_start: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``policy_step(obs, start)`` for the observation after a rollout's last step, with the rows that start an
    episode (``episode_start`` (N,) bool) passed as continuing rows: logits (N, A) (of no use to anyone: the next
    rollout recomputes them) and values (N,), exact for the other rows and 0 for the starting ones."""
    logits, values = policy_step(obs, np.zeros_like(episode_start, dtype=bool))
    starts = torch.as_tensor(np.asarray(episode_start, dtype=bool), device=values.device)  # (N,)
    return logits, values.masked_fill(starts, 0.0)
