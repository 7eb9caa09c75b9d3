"""A rollout flattened for the update: column-major steps, chunks, and the minibatches drawn from them.

The update sees the ``(T, N)`` rollout as ``S = N*T`` steps in column-major order (env column first,
then time), so the steps of one episode in one column are contiguous. A *chunk* is a maximal run of
such steps inside one episode (:func:`chunk_ids`); minibatches are sets of whole chunks, so a
network whose observation is the history (the LM) evaluates each chunk in one teacher-forced pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from agents import parallel
from agents.history_obs import HistoryObs
from agents.networks import Obs, StepBatch

if TYPE_CHECKING:
    from agents.config import Rollout
    from agents.estimators import Advantages


def flatten(x: Tensor) -> Tensor:
    """(T, N, ...) -> (N*T, ...) in column-major order (env column first, then time)."""
    return x.transpose(0, 1).reshape(-1, *x.shape[2:])


def unflatten(x: Tensor, T: int, N: int) -> Tensor:
    """(N*T,) -> (T, N), the inverse of :func:`flatten`."""
    return x.view(N, T).transpose(0, 1)


def flatten_obs(obs: Obs | HistoryObs) -> Obs | HistoryObs:
    """:func:`flatten` of a tensor, of each tensor of a dict observation, or of a :class:`HistoryObs`'s slots."""
    if isinstance(obs, HistoryObs):
        return obs.flatten()
    if isinstance(obs, dict):
        return {k: flatten(v) for k, v in obs.items()}
    return flatten(obs)


def index_obs(obs: Obs, idx: Tensor) -> Obs:
    if isinstance(obs, dict):
        return {k: v[idx] for k, v in obs.items()}
    return obs[idx]


def chunk_ids(episode_start: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Chunk index of every step, flattened column-major ((N*T,) int64).

    A chunk is a maximal run of consecutive steps of one env column inside one episode:
    a new chunk begins at ``t = 0``, at an episode start, and at any change of ``valid``.
    """
    T, N = episode_start.shape
    new = np.zeros((N, T), dtype=bool)
    new[:, 0] = True
    v = valid.T  # (N, T)
    new[:, 1:] = episode_start.T[:, 1:] | (v[:, 1:] != v[:, :-1])
    return np.cumsum(new.reshape(-1)) - 1


def make_batch(obs: Obs | HistoryObs, actions: Tensor, chunk: Tensor, idx: Tensor) -> StepBatch:
    """Gather steps ``idx`` (whole chunks, column-major order) into a :class:`StepBatch` (from a
    :class:`HistoryObs`: only the chunks' last observations, ``StepBatch.last_obs``)."""
    c = chunk[idx]  # (B,) global chunk ids, non-decreasing
    _, local = torch.unique_consecutive(c, return_inverse=True)  # (B,) in [0, C)
    is_last = torch.ones_like(c, dtype=torch.bool)
    is_last[:-1] = c[1:] != c[:-1]
    chunk_last = torch.nonzero(is_last).squeeze(1)  # (C,)
    steps_to_end = chunk_last[local] - torch.arange(c.numel(), device=c.device)  # (B,)
    if isinstance(obs, HistoryObs):
        return StepBatch(None, actions[idx], local, steps_to_end, chunk_last, obs.at(idx[chunk_last]))
    return StepBatch(index_obs(obs, idx), actions[idx], local, steps_to_end, chunk_last)


@dataclass
class FlatBatch:
    """Every step of a rollout, column-major ``(S,)``, with the estimator's advantages and mask."""

    obs: Obs | HistoryObs  # (S, ...), or the chunks' last contexts (history networks)
    actions: Tensor  # (S,) long
    old_logprob: Tensor  # (S,) log π_old
    old_values: Tensor  # (S,) V_old
    adv: Tensor  # (S,) Â, 0 off the mask
    targets: Tensor  # (S,)
    mask: Tensor  # (S,) bool: learned steps
    chunk: Tensor  # (S,) long chunk ids
    action_table: Tensor | None  # (M, A) bool distinct allowed-action rows, None = all allowed
    action_rows: Tensor | None  # (S,) long row of ``action_table`` per step
    ref_logprob: Tensor | None  # (S,) log π_ref (KL as a loss term)

    @classmethod
    def from_rollout(cls, ro: Rollout, est: Advantages) -> FlatBatch:
        masks = ro.action_masks
        chunk = chunk_ids(ro.episode_start.cpu().numpy(), ro.valid.cpu().numpy())
        mask = flatten(est.mask)
        return cls(
            obs=flatten_obs(ro.obs), actions=flatten(ro.actions), old_logprob=flatten(ro.logprobs),
            old_values=flatten(ro.values[:-1]), adv=torch.where(mask, flatten(est.adv), 0.0),
            targets=flatten(est.targets), mask=mask, chunk=torch.as_tensor(chunk, device=mask.device),
            action_table=None if masks is None else masks.table,
            action_rows=None if masks is None else flatten(masks.index),
            ref_logprob=None if ro.ref_logprobs is None else flatten(ro.ref_logprobs),
        )

    def learn_chunks(self) -> Tensor:
        """(K,) ids of the chunks with at least one learned step."""
        return torch.unique(self.chunk[self.mask])


def micro_slices(chunk: Tensor, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` step ranges that split a minibatch (``chunk`` (B,) its non-decreasing chunk ids) into
    consecutive micro-batches of at most ``size`` whole chunks (gradient accumulation; one host sync)."""
    _, counts = torch.unique_consecutive(chunk, return_counts=True)  # (C,) steps per chunk
    ends = counts.cumsum(0)  # (C,) end of each chunk
    cuts = ends[size - 1::size].tolist()
    if not cuts or cuts[-1] != chunk.numel():
        cuts.append(chunk.numel())
    return list(zip([0, *cuts[:-1]], cuts))


def split_minibatches(learn_chunks: Tensor, offset: int, total: int, num_groups: int) -> list[Tensor]:
    """This rank's chunks of each of ``num_groups`` shuffled minibatches of the ranks' global chunk list.

    The ranks' ``learn_chunks`` (K,) in rank order are one list of ``total`` chunks (this rank's start at
    ``offset``); rank 0 draws the permutation and broadcasts it, so the minibatches are the ones one process
    holding every rank's envs (with rank 0's RNG) would draw, and their count is the same on every rank
    (a rank may hold none of a minibatch's chunks). In one process: ``tensor_split(learn_chunks[randperm(K)])``.
    """
    order = parallel.broadcast(torch.randperm(total, device=learn_chunks.device))  # (total,) global chunk order
    mine = [seg[(seg >= offset) & (seg < offset + learn_chunks.numel())] - offset
            for seg in torch.tensor_split(order, num_groups)]
    return [learn_chunks[i] for i in mine]
