"""How the causal-LM runtime spends its compute, without changing what it computes.

- :func:`fuse_gelu`: GPT-2's tanh-GELU as one PyTorch kernel instead of five (same function).
- :data:`AUTOCAST_DTYPES` / :func:`check_autocast_dtype`: the opt-in reduced precisions of ``torch.autocast``.
- :func:`length_groups`: left-padded rows split into groups of similar length, one forward each, so that short
  rows do not pay for the padding of the longest (``IncrementalLM``'s prefill of every row).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import nn
from transformers.activations import GELUTanh, NewGELUActivation

ModuleT = TypeVar("ModuleT", bound=nn.Module)

__all__ = ["AUTOCAST_DTYPES", "PASS_COST_TOKENS", "check_autocast_dtype", "fuse_gelu", "length_groups"]


def fuse_gelu(model: ModuleT) -> ModuleT:
    """Swap every ``NewGELUActivation`` (GPT-2's ``gelu_new``: 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) written
    as five elementwise kernels) for ``GELUTanh`` (the same formula, ``F.gelu(approximate="tanh")``, one kernel;
    outputs differ by float rounding, ~2e-7) in place. Weights, config and ``state_dict`` are unchanged."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
    return model


AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def check_autocast_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """None, or a float16/bfloat16 dtype (given as a dtype or by name) for ``torch.autocast``."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in AUTOCAST_DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype in AUTOCAST_DTYPES:
        return AUTOCAST_DTYPES[dtype]
    raise ValueError(f"autocast_dtype must be None, 'bfloat16' or 'float16' (or the torch dtypes), got {dtype!r}.")


PASS_COST_TOKENS = 64
"""What one more forward pass costs, in padded tokens (its fixed cost: reading every weight once, launching
its kernels): about what a 64-row decode step costs beyond its FLOPs on a CPU thread."""


def length_groups(lengths: np.ndarray, pass_cost: int = PASS_COST_TOKENS) -> list[np.ndarray]:
    """Row indices (sorted) of each group of rows to run in one left-padded forward, (R,) lengths -> groups.

    A group of ``n`` rows whose longest has ``w`` tokens costs ``n·w + pass_cost``; the groups (contiguous runs
    of the rows sorted by length, found by dynamic programming over the distinct lengths) minimise the total.
    One group (every row) when the lengths are equal or padding costs less than another pass.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    widths, counts = np.unique(lengths, return_counts=True)  # (K,) ascending
    before = np.concatenate([[0], np.cumsum(counts)])  # (K + 1,) rows shorter than widths[k]
    best = np.zeros(len(widths) + 1)  # best[k]: cost of the rows of the k shortest widths
    cut = np.zeros(len(widths) + 1, dtype=np.int64)
    for k in range(1, len(widths) + 1):  # the last group: widths j..k-1, padded to widths[k-1]
        costs = [best[j] + (before[k] - before[j]) * widths[k - 1] + pass_cost for j in range(k)]
        cut[k] = int(np.argmin(costs))
        best[k] = costs[cut[k]]
    groups, k = [], len(widths)
    while k > 0:
        groups.append(np.sort(order[before[cut[k]]: before[k]]))
        k = int(cut[k])
    return groups[::-1]
