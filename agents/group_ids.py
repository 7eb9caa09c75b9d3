"""Group ids fixed before any return is seen, for envs that do not name their groups (CatGrid).

Rows come in blocks of ``k``; group ``e`` of block ``b`` (id ``e·B + b``, ``B = N / k`` blocks) is one episode
of each of the block's k rows. A row plays group ``e`` with the first episode it starts after group ``e - 1``
has finished on every row of its block; an episode it starts while its block is still finishing group ``e - 1``
(it finished its own already) is *idle*: id ``-1``, never learned (the row waits, as the rows of a batched
generate-k-per-prompt trainer wait masked). Whether an episode plays or idles is decided when it starts, from
the past only, so which episodes are learned does not depend on their outcome, and the rows of a block never
drift apart: the agent carries at most one unfinished group per block.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IDLE = -1
"""Group id of an episode that waits for its block's group to finish (never learned)."""


class BlockGroups:
    """Assigns the group id of every row's episode at its start (``starts``) and tracks its end (``ends``)."""

    def __init__(self, num_rows: int, k: int) -> None:
        self.k, self.blocks = k, num_rows // k
        self.block = np.arange(num_rows) // k  # (N,)
        self.e = np.zeros(self.blocks, dtype=np.int64)  # (B,) the group each block plays now
        self.played = np.ones(num_rows, dtype=bool)  # (N,) the row has started its episode of group e
        self.finished = np.zeros(num_rows, dtype=bool)  # (N,) ... and finished it
        self.group = self.block.astype(np.int64)  # (N,) id of each row's current episode (all start group 0)

    def ends(self, done: np.ndarray) -> None:
        """Rows whose (valid) episode ended this step; a block whose k rows have finished moves to group e + 1."""
        self.finished |= done & (self.group != IDLE)
        complete: np.ndarray = np.asarray(self.finished.reshape(self.blocks, self.k).all(1))  # (B,)
        self.e += complete
        over = complete[self.block]  # (N,)
        self.played &= ~over
        self.finished &= ~over

    def starts(self, start: np.ndarray) -> None:
        """Rows whose next step starts an episode: they play their block's group, or idle if they played it."""
        play = start & ~self.played
        self.group = np.where(play, self.e[self.block] * self.blocks + self.block, np.where(start, IDLE, self.group))
        self.played |= play

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).copy() for k in ("e", "played", "finished", "group")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("e", "played", "finished", "group"):
            setattr(self, k, np.asarray(state[k]).copy())
