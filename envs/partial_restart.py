"""Starting some rows of the text engine over between steps (``SAME_STEP`` autoreset, masked partial resets).

:func:`restart_lm_rows` prefills rows of an :class:`envs.lm.IncrementalLM` without advancing the other rows;
:func:`restart_core_rows` gives rows of a :class:`envs.textgen_core.TextGenCore` new prompts now (the prompts a
``NEXT_STEP`` restart of the same rows would draw) and, in the per-step reference mode, their reference state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from envs.lm import IncrementalLM


def restart_lm_rows(lm: IncrementalLM, rows: np.ndarray, input_ids: Any, attention_mask: Any) -> torch.Tensor:
    """Start ``rows`` (indices) of ``lm`` over from their left-padded contexts without advancing the other rows
    -> their last hidden state, (R, D). The next ``lm.step`` appends to them."""
    if lm._cache is None:
        raise ValueError("The first step (and the first after reset()) must restart every row.")
    rows = np.asarray(rows, dtype=np.int64)
    with torch.inference_mode(), lm.autocast():
        ids, mask = lm._read_restarts(rows, input_ids, attention_mask)
        cache = lm._ring()
        if ids.shape[1] > cache.capacity:
            lm._grow(max(ids.shape[1], 2 * cache.capacity))
        cache.col = (cache.col - 1) % cache.capacity  # the contexts end on the last written column
        hidden = lm._restart_rows(rows, ids, mask)
        cache.col = (cache.col + 1) % cache.capacity
    with torch.no_grad():
        return hidden.clone()


def restart_core_rows(core: Any, rows: np.ndarray, rng: np.random.Generator) -> None:
    """New episodes in ``rows`` of the engine ``core`` now; the other rows keep theirs."""
    core._start(rows, rng)
    if core.ref_mode != "per_step":  # the one-pass reference keeps no per-row state between steps
        return
    if rows.size == core.num_rows or core._ref_hidden is None:
        core._ref_hidden = core.ref_lm.step(None, None, core.input_ids, core.attention_mask)
    else:
        hidden = core._ref_hidden.clone()  # (N, D)
        hidden[torch.as_tensor(rows, device=core.ref_device)] = restart_lm_rows(core.ref_lm, rows, core.input_ids,
                                                                            core.attention_mask)
        core._ref_hidden = hidden
    core._ref_behind = False  # rows the cache is behind on (all ended) must be reset before they step
