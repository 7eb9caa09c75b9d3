"""Flattening a rollout for the update (agents/batch.py): chunk ids and minibatch positions by hand."""

from __future__ import annotations

import numpy as np
import torch

from agents.batch import chunk_ids, flatten, make_batch, unflatten


def test_chunk_ids_split_at_starts_and_reset_steps():
    # T = 5, N = 2; env 0: episode ends at t=1 (t=2 reset step, t=3 start); env 1 runs throughout
    starts = np.array([[1, 1], [0, 0], [0, 0], [1, 0], [0, 0]], dtype=bool)
    valid = np.array([[1, 1], [1, 1], [0, 1], [1, 1], [1, 1]], dtype=bool)
    # column-major: env 0 → chunks 0,0,1,2,2 ; env 1 → chunk 3 for all steps
    assert chunk_ids(starts, valid).tolist() == [0, 0, 1, 2, 2, 3, 3, 3, 3, 3]


def test_make_batch_positions():
    chunk = torch.tensor([0, 0, 1, 2, 2, 3, 3, 3])
    idx = torch.tensor([0, 1, 5, 6, 7])  # chunks 0 and 3
    obs = torch.arange(8).unsqueeze(1)
    batch = make_batch(obs, torch.arange(8), chunk, idx)
    assert batch.chunk.tolist() == [0, 0, 1, 1, 1]
    assert batch.chunk_last.tolist() == [1, 4]
    assert batch.steps_to_end.tolist() == [1, 0, 2, 1, 0]


def test_flatten_is_column_major_and_unflatten_inverts_it():
    x = torch.arange(6).view(3, 2)  # (T, N)
    assert flatten(x).tolist() == [0, 2, 4, 1, 3, 5]
    assert torch.equal(unflatten(flatten(x), 3, 2), x)
