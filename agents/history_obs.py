"""Rollout observations of networks whose observation is the history: one context per chunk.

An LM policy's observation is the token context so far, and its ``evaluate`` reads only the observation at
each chunk's last step (:mod:`agents.batch`: a chunk is a run of steps of one env column inside one episode),
which already holds every earlier state of the chunk. So the collector stores, for such a network
(``history_observation = True``), only the contexts of the steps that end a chunk: a row's last step of an
episode, its reset step, and every row's step at the rollout's end, instead of the ``(T, N, L)`` stack of
all of them. :class:`HistoryObs` is that storage; the update, the carry (:mod:`agents.carry`) and resume
read it through :func:`agents.batch.make_batch`, :meth:`HistoryObs.time_slice` / :meth:`HistoryObs.cat` and
:meth:`HistoryObs.pack`, so they compute the same numbers as from the full stack. A network that needs every
step's observation (the grid transformer) gets :class:`FullObs`, the full stack.

Relies on the Gymnasium contract that a step's observation arrays are not overwritten by the next step (the
collector copies a step's chunk-end rows only once it knows they end a chunk, after the step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from agents.networks import EnvObs, Obs, obs_to_tensor

__all__ = ["FullObs", "HistoryObs", "ChunkEndObs", "chunk_ends", "obs_nbytes"]


def chunk_ends(valid: np.ndarray, next_valid: np.ndarray, next_start: np.ndarray, last: bool) -> np.ndarray:
    """(N,) bool: rows whose step ends a chunk (:func:`agents.batch.chunk_ids`): the rollout's last step, or the
    next step starts an episode or changes ``valid`` (all (N,) bool)."""
    return np.ones_like(valid) if last else next_start | (next_valid != valid)


@dataclass
class HistoryObs:
    """The observations a history network reads from a rollout: ``K`` stored contexts and where they belong.

    ``slot`` is ``(T, N)`` (a rollout) or ``(S,)`` (flattened column-major, :meth:`flatten`): the row of
    ``contexts`` holding the observation of that step, -1 where none is stored (a step that is not the last of
    its chunk, whose observation is a prefix of its chunk's last one).
    """

    contexts: dict[str, Tensor]  # each (K, L)
    slot: Tensor  # (T, N) or (S,) long, -1: not stored

    def flatten(self) -> HistoryObs:
        """(T, N) slots -> (N*T,) column-major (as :func:`agents.batch.flatten`)."""
        return HistoryObs(self.contexts, self.slot.transpose(0, 1).reshape(-1))

    def at(self, idx: Tensor) -> dict[str, Tensor]:
        """The observations of flattened steps ``idx`` (B,) -> each (B, L); every one must be stored."""
        rows = self.slot[idx]  # (B,)
        if bool((rows < 0).any()):
            raise RuntimeError("HistoryObs: asked for the observation of a step that does not end its chunk "
                               "(only chunk ends are stored; evaluate reads batch.chunk_obs())")
        return {k: v[rows] for k, v in self.contexts.items()}

    def step(self, t: int, n: int) -> dict[str, Tensor]:
        """The stored observation of step ``t`` of row ``n`` of a ``(T, N)`` rollout (each (L,)); it must end its
        chunk (an episode's last step, a reset step, or the rollout's last step)."""
        row = int(self.slot[t, n])
        if row < 0:
            raise RuntimeError(f"HistoryObs: step {t} of row {n} does not end its chunk, so its context is not stored")
        return {k: v[row] for k, v in self.contexts.items()}

    def time_slice(self, start: int, stop: int) -> HistoryObs:
        """Rows ``start:stop`` of a ``(T, N)`` rollout, keeping (copies of) only the contexts they use."""
        slot = self.slot[start:stop]  # (C, N)
        used = torch.unique(slot[slot >= 0])  # (K',) sorted
        remap = torch.full((self._num_contexts() + 1,), -1, dtype=torch.long, device=slot.device)
        remap[used] = torch.arange(used.numel(), device=slot.device)
        return HistoryObs({k: v[used].clone() for k, v in self.contexts.items()}, remap[slot])  # -1 -> -1

    @staticmethod
    def cat(a: HistoryObs, b: HistoryObs) -> HistoryObs:
        """``a``'s steps followed by ``b``'s (time-major, as ``torch.cat`` of two ``(T, N)`` stacks)."""
        if set(a.contexts) != set(b.contexts):
            raise ValueError(f"cannot join history observations of keys {sorted(a.contexts)} and {sorted(b.contexts)}")
        width = max(v.shape[1] for v in [*a.contexts.values(), *b.contexts.values()])
        ctx = {k: torch.cat([_left_pad(a.contexts[k], width), _left_pad(b.contexts[k], width)]) for k in a.contexts}
        slot_b = torch.where(b.slot >= 0, b.slot + a._num_contexts(), -1)
        return HistoryObs(ctx, torch.cat([a.slot, slot_b]))

    def _num_contexts(self) -> int:
        return next(iter(self.contexts.values())).shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored contexts (the slot table excluded)."""
        return sum(v.numel() * v.element_size() for v in self.contexts.values())

    def pack(self) -> dict[str, Any]:
        """Plain tensors for a checkpoint (:meth:`unpack` rebuilds it)."""
        return {"history_slot": self.slot, "history_contexts": dict(self.contexts)}

    @staticmethod
    def unpack(d: Any) -> Any:
        """:meth:`pack`'s output -> :class:`HistoryObs`; anything else (a full observation stack) unchanged."""
        if isinstance(d, dict) and "history_slot" in d:
            return HistoryObs(dict(d["history_contexts"]), d["history_slot"])
        return d


def _left_pad(x: Tensor, width: int) -> Tensor:
    """(K, L) -> (K, width) with zeros on the left (padding: attention mask 0)."""
    return x if x.shape[1] == width else torch.nn.functional.pad(x, (width - x.shape[1], 0))


def obs_nbytes(obs: Obs | HistoryObs) -> int:
    """Bytes of a rollout's stored observations (a full stack or :class:`HistoryObs`)."""
    if isinstance(obs, HistoryObs):
        return obs.nbytes
    tensors = obs.values() if isinstance(obs, dict) else [obs]
    return sum(v.numel() * v.element_size() for v in tensors)


class FullObs:
    """Every step's observation: the ``(T, N, ...)`` stack (networks that read each step's own observation)."""

    def __init__(self, T: int, N: int, device: torch.device) -> None:
        self.device = device
        self.steps: list[Obs] = []  # T observations (N, ...)

    def add(self, t: int, obs: EnvObs, ends: np.ndarray) -> None:
        self.steps.append(obs_to_tensor(obs, self.device))

    def build(self) -> Obs:
        first = self.steps[0]
        if isinstance(first, dict):
            return {k: torch.stack([cast(dict, o)[k] for o in self.steps]) for k in first}  # each (T, N, ...)
        return torch.stack(cast(list[Tensor], self.steps))  # (T, N, ...)


class ChunkEndObs:
    """Only the contexts of the steps that end a chunk (:class:`HistoryObs`), copied to the device once per rollout."""

    def __init__(self, T: int, N: int, device: torch.device) -> None:
        self.device = device
        self.slot = np.full((T, N), -1, dtype=np.int64)  # (T, N)
        self.parts: list[dict[str, np.ndarray]] = []  # each (k_t, L), the rows of step t that end a chunk
        self.count = 0

    def add(self, t: int, obs: EnvObs, ends: np.ndarray) -> None:
        if not isinstance(obs, dict):
            raise TypeError("history observations are token contexts (a dict of (N, L) arrays)")
        rows = np.flatnonzero(ends)  # (k_t,)
        self.slot[t, rows] = self.count + np.arange(rows.size)
        self.count += rows.size
        self.parts.append({k: np.asarray(v)[rows] for k, v in obs.items()})

    def build(self) -> HistoryObs:
        keys = self.parts[0].keys()
        ctx = {k: torch.as_tensor(np.concatenate([p[k] for p in self.parts]), device=self.device) for k in keys}
        return HistoryObs(ctx, torch.as_tensor(self.slot, device=self.device))  # contexts (K, L), slot (T, N)
