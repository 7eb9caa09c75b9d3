"""Teacher-forced and KV-cached forward passes over left-padded rows of a causal LM.

- :func:`padded_causal_mask` / :func:`attention_mask_for`: ready 4D attention masks (``sdpa``: bool, ``eager``:
  additive), so no model ever builds its own mask from a padded 2D one; sliding-window layers get their own
  (:func:`envs.lm.logits.layer_masks`).
- :func:`forward_left_padded`: one teacher-forced trunk pass (the update's evaluation, and prefills).
- :class:`IncrementalLM`: batched decoding over ``N`` rows that restart independently, with a preallocated
  ring-buffer KV cache (:class:`RingCache`): one token per row per step, nothing copied or concatenated per step.
- :func:`fuse_gelu` and the autocast dtypes, re-exported from :mod:`envs.lm.compute`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin

from envs.lm.compute import AUTOCAST_DTYPES, check_autocast_dtype, fuse_gelu, length_groups  # noqa: F401
from envs.lm.loading import adapter_off, unwrap
from envs.lm.logits import LogitsHead, check_logits_path, layer_masks
from envs.lm.logits import additive as attention_mask_for  # noqa: F401  (re-exported by envs.lm)


def _as_numpy(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()  # a device sync on GPU: prefer numpy inputs (env observations are numpy)
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}.")


def padded_causal_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool key mask of left-padded rows -> (B, 1, L, L) bool attention mask.

    Causal, padded keys hidden, and every padded query attends to itself so no attention row
    is empty (an all-masked row gives NaN in sdpa, and NaN poisons gradients even when the
    padded outputs are never read).
    """
    L = mask.shape[1]
    eye = torch.eye(L, dtype=torch.bool, device=mask.device)
    causal = eye.cumsum(0).bool() if L > 0 else eye  # (L, L) lower triangle
    return ((causal & mask[:, None, :]) | eye)[:, None]  # (B, 1, L, L)


def forward_left_padded(
    model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, cache: Cache | None = None,
    cache_kw: str = "past_key_values",
) -> torch.Tensor:
    """Teacher-forced trunk pass over left-padded rows ``ids`` (B, L); returns hidden states (B, L, D).

    Position ids count real tokens only, so a row's positions do not depend on its padding.
    """
    mask = mask.bool()
    pos = (mask.long().cumsum(-1) - 1).clamp_(min=0)  # (B, L)
    kwargs = {cache_kw: cache, "use_cache": True} if cache is not None else {"use_cache": False}
    masks = layer_masks(model, padded_causal_mask(mask), pos, pos)  # per attention type (sliding windows)
    out = model.base_model(input_ids=ids, attention_mask=masks, position_ids=pos, **kwargs)
    return out.last_hidden_state


class BufferLayer(CacheLayerMixin):
    """K/V of one attention layer in preallocated (N, H, W, Dh) buffers sized by its cache's ``num_rows`` and
    ``capacity`` (the ring cache's layers here, the multi-turn append cache's in :mod:`envs.lm.append_cache`)."""

    cache: Any  # the owning cache: num_rows, capacity and where the next forward writes

    def __init__(self, cache: Any) -> None:
        super().__init__()
        self.cache = cache

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        n, w = self.cache.num_rows, self.cache.capacity
        self.keys = key_states.new_zeros(n, key_states.shape[1], w, key_states.shape[-1])
        self.values = value_states.new_zeros(n, value_states.shape[1], w, value_states.shape[-1])
        self.is_initialized = True

    def _buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (N, H, W, Dh) K and V buffers (allocated by :meth:`lazy_initialization`)."""
        if self.keys is None or self.values is None:
            raise RuntimeError("internal: a cache layer's buffers are read before they were allocated.")
        return self.keys, self.values

    def widen(self, capacity: int, oldest: int = 0) -> None:
        """Unroll the buffers so that column ``oldest`` comes first (a ring), then widen them to ``capacity``."""
        if not self.is_initialized:
            return
        for name in ("keys", "values"):
            old = getattr(self, name)
            old = torch.roll(old, -oldest, dims=2) if oldest else old
            new = old.new_zeros(*old.shape[:2], capacity, old.shape[-1])
            new[:, :, : old.shape[2]] = old
            setattr(self, name, new)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cache.capacity, 0

    def get_seq_length(self) -> int:
        return self.cache.capacity

    def get_max_length(self) -> int:
        return self.cache.capacity


class _RingLayer(BufferLayer):
    """A ring cache's layer, written where its :class:`RingCache` points: a decode writes one column of every
    row and attends to the whole buffer; a prefill writes its rows' columns and attends to its own fresh states
    only (a restarting row never sees its old episode)."""

    cache: RingCache

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys, values = self._buffers()
        ring = self.cache
        if ring.rows is None:  # decode: one new column for every row
            col = ring.col
            keys[:, :, col : col + 1] = key_states
            values[:, :, col : col + 1] = value_states
            return keys, values
        if isinstance(ring.rows, slice) and isinstance(ring.cols, slice):  # all rows, contiguous columns
            keys[:, :, ring.cols] = key_states
            values[:, :, ring.cols] = value_states
        elif isinstance(ring.rows, torch.Tensor) and isinstance(ring.cols, torch.Tensor):
            # some rows, possibly wrapping around the ring: (R, 1) x (1, w) -> (R, w, H, Dh)
            rows, cols = ring.rows[:, None], ring.cols[None, :]
            keys[rows, :, cols] = key_states.transpose(1, 2)
            values[rows, :, cols] = value_states.transpose(1, 2)
        else:
            raise TypeError(f"RingCache rows/cols must be both slices or both tensors: {ring.rows!r}, {ring.cols!r}")
        return key_states, value_states


class RingCache(Cache):
    """A preallocated KV cache of ``capacity`` columns shared by ``num_rows`` rows, used as a ring.

    Every decode step writes column :attr:`col` of every row; a row's real tokens are its last ``lengths[n]``
    written columns (in ring order), tracked by :class:`IncrementalLM`'s key mask. Attention does not care about
    column order (position ids are explicit), so the ring never has to be shifted, only widened when a row would
    outgrow it. Before a forward, :class:`IncrementalLM` sets :attr:`rows`/:attr:`cols` (None for a decode).
    """

    def __init__(self, num_rows: int, num_layers: int, capacity: int) -> None:
        self.num_rows, self.capacity = num_rows, capacity
        self.col = 0
        self.rows: slice | torch.Tensor | None = None
        self.cols: slice | torch.Tensor | None = None
        super().__init__(layers=[_RingLayer(self) for _ in range(num_layers)])

    def grow(self, capacity: int) -> None:
        for layer in self.layers:
            cast(_RingLayer, layer).widen(capacity, self.col)  # every layer is a _RingLayer (see __init__)
        self.col, self.capacity = self.capacity, capacity


class IncrementalLM:
    """Batched KV-cached decoding over ``num_rows`` independent rows that may restart at any step.

    The cache is a preallocated ring of ``W`` columns (:class:`RingCache`, ``W = max_len`` when given, else
    grown by doubling when a row would not fit): a step appends one token to every row by writing one column,
    with no per-step concatenation or copy of the cache. A restarting row is prefilled from its left-padded
    context in a batched forward of the restarting rows only (attending to their fresh states) and written over
    its own old columns; the other rows are never recomputed. Each token gets position id = number of real tokens
    before it, so left padding never shifts absolute positions. Attention uses a ready 4D mask (``sdpa``: bool,
    ``eager``: additive); padded queries attend to themselves so no row is ever fully masked (no NaN).

    ``step`` returns the trunk's last hidden state per row, (N, D); apply :attr:`head` for logits. It runs under
    ``torch.inference_mode`` (the cache is never differentiated) and returns a normal (N, D) tensor.
    ``autocast_dtype`` (None, ``torch.bfloat16`` or ``torch.float16``) runs the decode under ``torch.autocast``
    (the cache then holds that dtype); off by default because log-probs are then only bf16/fp16-accurate.
    """

    def __init__(
        self, model: PreTrainedModel, num_rows: int, max_len: int | None = None,
        autocast_dtype: torch.dtype | None = None, reference: bool = False,
    ) -> None:
        """``model`` may be a peft ``PeftModel``: it decodes with its adapter, or as its base model (adapter
        disabled for every forward and :attr:`head` call made inside :meth:`autocast`) when ``reference``."""
        if num_rows < 1:
            raise ValueError(f"num_rows must be >= 1, got {num_rows}.")
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be None or >= 1, got {max_len}.")
        self.autocast_dtype = check_autocast_dtype(autocast_dtype)
        self.wrapper, model = model, unwrap(model)  # the PeftModel (or the model itself), the causal LM inside
        self.reference = reference
        self.model = fuse_gelu(model)  # in place (same function, fewer kernels per decode step)
        self.trunk = model.base_model  # e.g. GPT2Model: returns hidden states
        self.head = LogitsHead(model)  # (D -> V), with the model's own logit post-processing
        self.num_rows = num_rows
        self.max_len = max_len
        self.device = next(model.parameters()).device
        if model.config._attn_implementation not in ("sdpa", "eager"):
            raise ValueError(
                f"IncrementalLM needs attention 'sdpa' or 'eager' (ready 4D masks), not "
                f"{model.config._attn_implementation!r}; call model.set_attn_implementation('sdpa') first."
            )
        self._num_layers = int(model.config.get_text_config().num_hidden_layers)
        params = inspect.signature(self.trunk.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.passes = {"decode": 0, "prefill": 0}  # batched forward passes so far (reset() keeps counting)
        with adapter_off(self.wrapper) if reference else contextlib.nullcontext():  # float32: exact comparison
            check_logits_path(model, self.head, forward_left_padded)
        self.reset()

    def reset(self) -> None:
        """Forget every row; the next :meth:`step` must restart all rows."""
        self._cache: RingCache | None = None
        self._mask: torch.Tensor | None = None  # (N, W) bool: real tokens of each row
        self._pos: torch.Tensor | None = None  # (N,) position id of each row's next token
        self._key_pos: torch.Tensor | None = None  # (N, W) position id of the token in each cache column
        self.lengths = np.zeros(self.num_rows, dtype=np.int64)  # real tokens per row (host)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The autocast context of the decode (disabled unless ``autocast_dtype`` is set), with a reference's
        adapter disabled; apply :attr:`head` inside it too (the largest matmul then runs in that dtype as well)."""
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            with adapter_off(self.wrapper) if self.reference else contextlib.nullcontext():
                yield

    @property
    def cache_length(self) -> int:
        """Cache width ``W`` in columns (0 before the first step)."""
        return 0 if self._cache is None else self._cache.capacity

    def _read_restarts(self, rows: np.ndarray, input_ids: Any, attention_mask: Any) -> tuple[np.ndarray, np.ndarray]:
        """Restarting rows' contexts cropped to their longest real length; validates left padding."""
        ids = _as_numpy(input_ids, "input_ids")
        mask = _as_numpy(attention_mask, "attention_mask")
        if ids.ndim != 2 or ids.shape != mask.shape or ids.shape[0] != self.num_rows:
            raise ValueError(
                f"input_ids and attention_mask must both be (num_rows={self.num_rows}, L); got {ids.shape} and "
                f"{mask.shape}."
            )
        ids, mask = ids[rows].astype(np.int64), mask[rows].astype(np.int64)  # (R, L)
        lengths = mask.sum(1)
        if (lengths == 0).any():
            raise ValueError("Every restarting row needs at least one real token in attention_mask.")
        if (np.diff(mask, axis=1) < 0).any():
            raise ValueError("Contexts must be LEFT padded (attention_mask of the form 0..0 1..1).")
        width = int(lengths.max())
        ids = np.where(mask > 0, ids, 0)  # whatever sits under the padding, embed a valid id
        return ids[:, -width:], mask[:, -width:]

    def step(
        self,
        tokens: torch.Tensor | None,
        restart: np.ndarray | None,
        input_ids: np.ndarray | torch.Tensor | None = None,
        attention_mask: np.ndarray | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Advance every row by one and return each row's last hidden state, (N, D).

        tokens (N,) long on the model's device: token appended to non-restarting rows (ignored for restarting
        rows; may be None when all rows restart). restart (N,) host bool array, None = all rows: those rows start
        over from their left-padded context in ``input_ids``/``attention_mask`` (N, L) (only restarting rows are
        read), prefilled together in one batched forward.
        """
        with torch.inference_mode(), self.autocast():
            hidden = self._step(tokens, restart, input_ids, attention_mask)
        with torch.no_grad():
            return hidden.clone()  # a normal tensor: heads may be applied with autograd on (e.g. in tests)

    def _step(
        self, tokens: torch.Tensor | None, restart: np.ndarray | None, input_ids: Any, attention_mask: Any
    ) -> torch.Tensor:
        restart_all = restart is None or bool(np.all(restart))
        if self._cache is None and not restart_all:
            raise ValueError("The first step (and the first after reset()) must restart every row.")
        rows = np.arange(self.num_rows) if restart is None or restart_all else np.flatnonzero(restart)
        if rows.size and (input_ids is None or attention_mask is None):
            raise ValueError("Restarting rows need input_ids and attention_mask.")
        if restart_all:
            ids, mask = self._read_restarts(rows, input_ids, attention_mask)
            return self._restart_all(ids, mask)
        if tokens is None or tokens.shape != (self.num_rows,):
            raise ValueError(f"tokens must be a ({self.num_rows},) tensor when some rows continue.")
        restarts = self._read_restarts(rows, input_ids, attention_mask) if rows.size else None  # (R, w) ids, mask
        keep = np.ones(self.num_rows, dtype=bool)
        keep[rows] = False
        need = max(int(self.lengths[keep].max(initial=0)) + 1, 0 if restarts is None else restarts[0].shape[1])
        cache = self._ring()
        if need > cache.capacity:
            self._grow(max(need, 2 * cache.capacity))
        hidden = self._decode(tokens, rows)
        if restarts is not None:
            hidden[torch.as_tensor(rows, device=self.device)] = self._restart_rows(rows, *restarts)
        cache.col = (cache.col + 1) % cache.capacity
        return hidden

    def _ring(self) -> RingCache:
        """The ring cache (built by the first step, which restarts every row)."""
        if self._cache is None:
            raise RuntimeError("internal: the KV cache is used before the first step built it.")
        return self._cache

    def _positions(self) -> torch.Tensor:
        """(N, W) position id of the token in each cache column (for sliding-window masks)."""
        if self._key_pos is None:
            raise RuntimeError("internal: the key positions are used before the first step built them.")
        return self._key_pos

    def _decoder_state(self) -> tuple[RingCache, torch.Tensor, torch.Tensor]:
        """The ring cache, its key mask (N, W) bool and each row's next position id (N,), after the first step."""
        if self._mask is None or self._pos is None:
            raise RuntimeError("internal: the decoder state is used before the first step built it.")
        return self._ring(), self._mask, self._pos

    def _restart_all(self, ids: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        width = ids.shape[1]
        cache, key_mask = self._cache, self._mask  # both None before the first step, both set after it
        if cache is None or key_mask is None or cache.capacity < width:
            capacity = max(width, self.max_len or 2 * width)
            cache = self._cache = RingCache(self.num_rows, self._num_layers, capacity)
            key_mask = self._mask = torch.zeros(self.num_rows, capacity, dtype=torch.bool, device=self.device)
            self._key_pos = torch.zeros(self.num_rows, capacity, dtype=torch.long, device=self.device)
        mask_t = torch.as_tensor(mask, device=self.device).bool()  # (N, w)
        key_mask.zero_()
        key_mask[:, :width] = mask_t
        self._positions()[:, :width] = (mask_t.long().cumsum(1) - 1).clamp_(min=0)
        hidden = self._prefill_groups(torch.as_tensor(ids, device=self.device), mask_t, mask.sum(1))
        cache.col = width % cache.capacity
        self._pos = mask_t.sum(1)
        self.lengths = mask.sum(1)
        return hidden

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor, rows: Any, cols: Any) -> torch.Tensor:
        """Left-padded contexts (R, w) written to ``rows`` x ``cols`` of the ring -> last hidden state (R, D)."""
        cache = self._ring()
        cache.rows, cache.cols = rows, cols
        self.passes["prefill"] += 1
        try:
            return forward_left_padded(self.model, ids, mask, cache=cache, cache_kw=self._cache_kw)[:, -1]
        finally:
            cache.rows = cache.cols = None

    def _prefill_groups(self, ids: torch.Tensor, mask: torch.Tensor, lengths: np.ndarray) -> torch.Tensor:
        """Every row's context (N, w) into columns [0, w) of the ring, in one forward per group of rows of similar
        length (:func:`length_groups`: short rows do not pay for the longest one's padding) -> hidden (N, D)."""
        groups, width = length_groups(lengths), ids.shape[1]
        if len(groups) == 1:
            return self._prefill(ids, mask, slice(None), slice(0, width))
        hidden = torch.empty(0)
        for rows in groups:
            w, rows_t = int(lengths[rows].max()), torch.as_tensor(rows, device=self.device)
            h = self._prefill(ids[rows_t, -w:], mask[rows_t, -w:], rows_t, torch.arange(width - w, width,
                                                                                        device=self.device))
            hidden = h.new_empty(self.num_rows, h.shape[-1]) if hidden.numel() == 0 else hidden
            hidden[rows_t] = h
        return hidden

    def _decode(self, tokens: torch.Tensor, restart_rows: np.ndarray) -> torch.Tensor:
        """Append one token to every row at the ring's current column (restarting rows get a dummy token whose
        state :meth:`_restart_rows` overwrites)."""
        if restart_rows.size:
            tokens = tokens.clone()
            tokens[torch.as_tensor(restart_rows, device=self.device)] = 0
        cache, key_mask, pos = self._decoder_state()
        col = cache.col
        key_mask[:, col] = True
        key_pos = self._positions()
        key_pos[:, col] = pos
        mask4 = layer_masks(self.model, key_mask[:, None, None, :], pos[:, None], key_pos)  # (N, 1, 1, W) each
        out = self.trunk(input_ids=tokens[:, None], attention_mask=mask4, position_ids=pos[:, None],
                         use_cache=True, **{self._cache_kw: cache})
        self.passes["decode"] += 1
        pos += 1  # in place: self._pos
        self.lengths += 1
        return out.last_hidden_state[:, -1]  # (N, D)

    def _restart_rows(self, rows: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        """Prefill restarting rows into their own columns ending at the current one -> their hidden (R, D)."""
        cache, key_mask, pos = self._decoder_state()
        width, capacity = ids.shape[1], cache.capacity
        rows_t = torch.as_tensor(rows, device=self.device)
        cols_t = (torch.arange(cache.col - width + 1, cache.col + 1, device=self.device)) % capacity
        mask_t = torch.as_tensor(mask, device=self.device).bool()  # (R, w)
        key_mask[rows_t] = False
        key_mask[rows_t[:, None], cols_t[None, :]] = mask_t
        self._positions()[rows_t[:, None], cols_t[None, :]] = (mask_t.long().cumsum(1) - 1).clamp_(min=0)
        pos[rows_t] = mask_t.sum(1)
        self.lengths[rows] = mask.sum(1)
        return self._prefill(torch.as_tensor(ids, device=self.device), mask_t, rows_t, cols_t)

    def _grow(self, capacity: int) -> None:
        cache, key_mask, _ = self._decoder_state()
        key_mask = torch.roll(key_mask, -cache.col, dims=1)
        self._mask = torch.cat([key_mask, key_mask.new_zeros(self.num_rows, capacity - key_mask.shape[1])], 1)
        key_pos = torch.roll(self._positions(), -cache.col, dims=1)
        self._key_pos = torch.cat([key_pos, key_pos.new_zeros(self.num_rows, capacity - key_pos.shape[1])], 1)
        cache.grow(capacity)
