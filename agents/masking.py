"""Action masks: sampling, log-probs and entropy over the allowed actions only, stored compactly.

An env that forbids some actions says so with ``info["action_mask"]`` ((N, A) for a vector env,
1 = allowed; the Gymnasium toy-text / sb3-contrib MaskablePPO convention). The policy is then the
*masked* distribution

    π(a|s) = exp(z_a) / Σ_{b allowed} exp(z_b)  for allowed a, 0 otherwise

(logits ``z``), obtained by setting forbidden logits to the most negative float before the softmax.
The agent uses this same distribution to sample, for the sampling log-prob ``log π_old``, and at
update time for ``log π_θ`` and the entropy, so the importance ratio compares like with like.

Storage: a text env's mask has one entry per vocabulary token; a dense ``(T, N, V)`` bool tensor
is 55 MB at T=17, N=64, V=50257. Masks repeat (a row either may or may not end yet), so a
:class:`ActionMasks` keeps each step's *distinct* rows once — a table ``(U, V)`` with U ≤ T·N
(typically 2·T) — and a ``(T, N)`` index into it: any mask is stored exactly, in
O(U·V + T·N) memory instead of O(T·N·V).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor


def apply_mask(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Logits (B, A) with forbidden actions (``mask`` (B, A) bool False) set to the most negative float.

    ``log_softmax`` of the result is the masked distribution's log-prob (exactly 0 probability on
    forbidden actions); ``mask=None`` returns ``logits`` unchanged. Every row needs an allowed action.
    """
    if mask is None:
        return logits
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


def mask_from_info(info: dict[str, Any], num_envs: int, device: torch.device) -> Tensor | None:
    """The (N, A) bool mask of a vector-env ``info`` (rows not reporting one: all allowed), or None."""
    if "action_mask" not in info:
        return None
    mask = torch.as_tensor(np.asarray(info["action_mask"]), device=device).bool()  # (N, A)
    if mask.ndim != 2 or mask.shape[0] != num_envs:
        raise ValueError(f"info['action_mask'] must have shape (num_envs={num_envs}, num_actions), "
                         f"got {tuple(mask.shape)}")
    reported = info.get("_action_mask")
    if reported is not None and not np.all(reported):
        mask[torch.as_tensor(~np.asarray(reported, dtype=bool), device=device)] = True
    return mask


def unique_rows(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of ``mask`` (N, A) bool: table (U, A) and index (N,) with ``table[index] == mask``.

    One pass per distinct row (cheap when, as with text envs, rows take few distinct values).
    """
    n = mask.shape[0]
    index = torch.full((n,), -1, dtype=torch.long, device=mask.device)
    rows: list[Tensor] = []
    full = mask.all(dim=1)  # the common "everything allowed" row, found in one pass
    if full.any():
        rows.append(torch.ones_like(mask[0]))
        index[full] = 0
    while True:
        todo = torch.nonzero(index < 0).squeeze(1)
        if todo.numel() == 0:
            break
        row = mask[todo[0]]
        same = (mask[todo] == row).all(dim=1)
        index[todo[same]] = len(rows)
        rows.append(row)
    return torch.stack(rows), index


@dataclass
class ActionMasks:
    """Masks of a ``(T, N)`` rollout: ``table`` (U, A) bool of distinct rows, ``index`` (T, N) long into it."""

    table: Tensor
    index: Tensor

    def __getitem__(self, key: Any) -> ActionMasks:
        """Index the (T, N) steps, e.g. ``masks[:, cols]`` (the table is shared)."""
        return ActionMasks(self.table, self.index[key])

    def clone(self) -> ActionMasks:
        return ActionMasks(self.table.clone(), self.index.clone())

    def dense(self) -> Tensor:
        """(T, N, A) bool (for tests and small problems)."""
        return self.table[self.index]

    @classmethod
    def stack(cls, masks: list[Tensor]) -> ActionMasks:
        """From T per-step (N, A) bool masks."""
        tables, indices, offset = [], [], 0
        for mask in masks:
            table, index = unique_rows(mask)
            tables.append(table)
            indices.append(index + offset)
            offset += table.shape[0]
        return cls(torch.cat(tables), torch.stack(indices))
