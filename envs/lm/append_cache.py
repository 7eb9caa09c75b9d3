"""KV-cached forwards that append a different number of tokens to each row: the multi-turn decoder.

:class:`IncrementalLM` appends exactly one token per row per step (its ring cache writes one column of every row).
In a multi-turn episode a row sometimes appends one token (the agent's action) and sometimes a whole env turn
(the action plus the env's reply), so :class:`AppendLM` keeps each row's tokens in its own contiguous columns
``[0, length)`` of a preallocated cache (:class:`AppendCache`) and :meth:`AppendLM.extend` appends ``k_n`` tokens
to row ``n`` (any rows, any ``k_n >= 1``) in one batched forward: only the new tokens run through the model, the
prefix is read from the cache and never recomputed. A row that restarts is an extend from length 0. Position id of
a token = its column = the number of real tokens before it, as in :func:`envs.lm.forward_left_padded`, so the
hidden states equal one teacher-forced pass over the row's whole context.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache

from envs.lm.kv_cache import BufferLayer, check_autocast_dtype, forward_left_padded, fuse_gelu
from envs.lm.loading import adapter_off, unwrap
from envs.lm.logits import LogitsHead, check_logits_path, layer_masks

__all__ = ["AppendCache", "AppendLM", "right_padded"]


class _AppendLayer(BufferLayer):
    """K/V of one attention layer in (N, H, W, Dh) buffers; a forward writes columns ``cols`` (R, w) of rows
    ``rows`` (R,) and attends to those rows' whole buffers (the mask hides what lies past each query)."""

    cache: AppendCache

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys, values = self._buffers()
        rows, cols = self.cache.rows, self.cache.cols
        if rows is None or cols is None:
            raise RuntimeError("internal: AppendCache is used outside AppendLM.extend.")
        keys[rows[:, None], :, cols] = key_states.transpose(1, 2)  # (R, w, H, Dh)
        values[rows[:, None], :, cols] = value_states.transpose(1, 2)
        if self.cache.all_rows:
            return keys, values
        return keys[rows], values[rows]  # (R, H, W, Dh)


class AppendCache(Cache):
    """A preallocated KV cache of ``capacity`` columns per row; row ``n`` holds its tokens in columns
    ``[0, length_n)``. :class:`AppendLM` sets :attr:`rows` / :attr:`cols` around each forward."""

    def __init__(self, num_rows: int, num_layers: int, capacity: int) -> None:
        self.num_rows, self.capacity = num_rows, capacity
        self.rows: torch.Tensor | None = None
        self.cols: torch.Tensor | None = None
        self.all_rows = False
        super().__init__(layers=[_AppendLayer(self) for _ in range(num_layers)])

    def grow(self, capacity: int) -> None:
        for layer in self.layers:
            if isinstance(layer, _AppendLayer):
                layer.widen(capacity)
        self.capacity = capacity


def right_padded(chunks: list[np.ndarray], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (R, w) int64 ids, right padded with ``pad``, and their (R,) lengths (each >= 1)."""
    counts = np.array([len(c) for c in chunks], dtype=np.int64)
    if counts.size and counts.min() < 1:
        raise ValueError("every extended row needs at least one new token.")
    ids = np.full((len(chunks), int(counts.max(initial=1))), pad, dtype=np.int64)
    for i, c in enumerate(chunks):
        ids[i, : len(c)] = c
    return ids, counts


class AppendLM:
    """Batched KV-cached forwards over ``num_rows`` rows that each append any number of tokens per call.

    :meth:`extend` appends ``counts[r]`` tokens to row ``rows[r]`` (restarting it first where ``restart[r]``) and
    returns the trunk's hidden state at each row's new last token, (R, D); apply :attr:`head` for logits. It runs
    under ``torch.inference_mode`` and :meth:`autocast` (``autocast_dtype``, default off: exact float32). With
    ``reference=True`` a peft model runs with its adapter disabled (the frozen reference). The cache starts at
    ``max_len`` columns and grows when a row would outgrow it.
    """

    def __init__(
        self, model: PreTrainedModel, num_rows: int, max_len: int = 64,
        autocast_dtype: torch.dtype | None = None, reference: bool = False,
    ) -> None:
        if num_rows < 1 or max_len < 1:
            raise ValueError(f"num_rows and max_len must be >= 1, got {num_rows} and {max_len}.")
        self.autocast_dtype = check_autocast_dtype(autocast_dtype)
        self.wrapper, model = model, unwrap(model)
        self.reference = reference
        self.model = fuse_gelu(model)
        self.trunk = model.base_model
        self.head = LogitsHead(model)
        self.num_rows, self.max_len = num_rows, max_len
        self.device = next(model.parameters()).device
        if model.config._attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"AppendLM needs attention 'sdpa' or 'eager' (ready 4D masks), not "
                             f"{model.config._attn_implementation!r}; call model.set_attn_implementation('sdpa').")
        params = inspect.signature(self.trunk.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._num_layers = int(model.config.get_text_config().num_hidden_layers)
        self.passes = 0  # batched forwards so far
        with adapter_off(self.wrapper) if reference else contextlib.nullcontext():
            check_logits_path(model, self.head, forward_left_padded)
        self.reset()

    def reset(self) -> None:
        """Forget every row (each row's next :meth:`extend` must restart it)."""
        self.cache = AppendCache(self.num_rows, self._num_layers, self.max_len)
        self.lengths = np.zeros(self.num_rows, dtype=np.int64)  # real tokens per row (host)
        self.started = np.zeros(self.num_rows, dtype=bool)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forwards' autocast (off unless ``autocast_dtype``), a reference's adapter disabled; apply
        :attr:`head` inside it too."""
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            with adapter_off(self.wrapper) if self.reference else contextlib.nullcontext():
                yield

    def extend(self, rows: np.ndarray, ids: np.ndarray, counts: np.ndarray, restart: np.ndarray) -> torch.Tensor:
        """Append ``ids[r, :counts[r]]`` to row ``rows[r]`` (after forgetting it where ``restart[r]``) -> (R, D).

        rows (R,) distinct row indices, ids (R, w) right padded, counts (R,) >= 1, restart (R,) bool (host arrays).
        """
        rows, counts = np.asarray(rows, dtype=np.int64), np.asarray(counts, dtype=np.int64)
        restart = np.asarray(restart, dtype=bool)
        if not (restart | self.started[rows]).all():
            raise ValueError(f"rows {rows[~(restart | self.started[rows])].tolist()} must restart first.")
        if ids.ndim != 2 or ids.shape[0] != rows.size or counts.shape != rows.shape or counts.min() < 1:
            raise ValueError(f"ids must be (R={rows.size}, w) with counts (R,) >= 1; got {ids.shape}, {counts}.")
        self.lengths[rows[restart]] = 0
        self.started[rows] = True
        start = self.lengths[rows]  # (R,)
        need = int((start + ids.shape[1]).max())
        if need > self.cache.capacity:
            self.cache.grow(max(need, 2 * self.cache.capacity))
        with torch.inference_mode(), self.autocast():
            hidden = self._forward(rows, ids, start, counts)
        self.lengths[rows] = start + counts
        with torch.no_grad():
            return hidden.clone()

    def _forward(self, rows: np.ndarray, ids: np.ndarray, start: np.ndarray, counts: np.ndarray) -> torch.Tensor:
        dev, w, cap = self.device, ids.shape[1], self.cache.capacity
        start_t = torch.as_tensor(start, device=dev)
        q_pos = start_t[:, None] + torch.arange(w, device=dev)[None]  # (R, w) position = column of each token
        k_pos = torch.arange(cap, device=dev)[None].expand(rows.size, cap)  # (R, W)
        mask4 = (k_pos[:, None, :] <= q_pos[:, :, None])[:, None]  # (R, 1, w, W) causal over the row's columns
        masks = layer_masks(self.model, mask4, q_pos, k_pos)
        cache = self.cache
        cache.rows, cache.cols = torch.as_tensor(rows, device=dev), q_pos
        cache.all_rows = rows.size == self.num_rows and bool((rows == np.arange(self.num_rows)).all())
        pos_ids = torch.minimum(q_pos, start_t[:, None] + torch.as_tensor(counts - 1, device=dev)[:, None])  # padding
        self.passes += 1
        try:
            out = self.trunk(input_ids=torch.as_tensor(ids, device=dev), attention_mask=masks, position_ids=pos_ids,
                             use_cache=True, **{self._cache_kw: cache})
        finally:
            cache.rows = cache.cols = None
        last = torch.as_tensor(counts - 1, device=dev)
        return out.last_hidden_state[torch.arange(rows.size, device=dev), last]  # (R, D)
