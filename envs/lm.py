"""Language-model plumbing shared by the text-generation env and the agent.

- :func:`resolve_device` / :func:`load_causal_lm`: device choice and loading of a causal LM plus its tokenizer
  (HF id, local directory or ready objects) with an actionable error when the hub is unreachable.
- :class:`IncrementalLM`: batched KV-cached decoding over ``N`` independent rows, each of which can restart with a
  new prompt at any step (Gymnasium autoreset) without recomputing the other rows or its own past.
- :func:`make_reward_fn`: turns a sentiment classifier, ``"vader"`` or a plain callable into a checked batched
  ``list[str] -> np.ndarray`` scorer.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

RewardFn = Callable[[list[str]], np.ndarray]
DEFAULT_REWARD_MODEL = "lvwerra/distilbert-imdb"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; anything else is passed to :class:`torch.device`."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r} ({e}); use 'auto', 'cpu' or 'cuda[:N]'") from None


def offline_hint(name: str) -> str:
    """Message explaining how to run without the Hugging Face hub."""
    if name.startswith((".", "/", "~")):
        where = f"Could not load {name!r}: no model directory there."
    else:
        where = (f"Could not load {name!r}: it is not a local directory and the Hugging Face hub is unreachable or "
                 "offline (HF_HUB_OFFLINE).")
    return (
        f"{where} To run offline, pass a local directory instead (e.g. one made by "
        "`python -m runners.sft --preset tiny`, or any dir saved with save_pretrained), pass ready "
        "model/tokenizer objects, or download the model once while online so that the cache serves it with "
        "HF_HUB_OFFLINE=1."
    )


def _from_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:  # missing repo / no network / invalid local path
        if os.path.isdir(name):
            raise
        raise OSError(f"{offline_hint(name)} (original error: {err})") from err


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding, and a pad token: when the tokenizer has none, EOS doubles as pad (TRL's choice for GPT-2;
    attention masks make the two unambiguous, and the vocabulary and embeddings stay unchanged)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("The tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first.")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(
    model: str | os.PathLike | PreTrainedModel,
    tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
    device: str | torch.device = "auto",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (or accept) a causal LM and its tokenizer and move the model to ``device`` (in place for objects).

    The tokenizer gets a pad token and ``padding_side="left"`` (see :func:`prepare_tokenizer`). A model object
    needs ``tokenizer=``; a path or hub id loads its own tokenizer unless one is given.
    """
    if isinstance(model, PreTrainedModel):
        if tokenizer is None:
            raise ValueError("Pass tokenizer= together with a model object (or pass a model path / HF id).")
        lm = model
    elif isinstance(model, (str, os.PathLike)):
        lm = _from_pretrained(AutoModelForCausalLM, os.fspath(model))
        tokenizer = os.fspath(model) if tokenizer is None else tokenizer
    else:
        raise TypeError(f"model must be an HF id, a local path or a PreTrainedModel, got {type(model).__name__}.")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = _from_pretrained(AutoTokenizer, os.fspath(tokenizer))
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"tokenizer must be a path, an HF id or a tokenizer, got {type(tokenizer).__name__}.")
    if lm.get_output_embeddings() is None:
        raise ValueError(f"{type(lm).__name__} has no LM head; pass a causal LM (e.g. GPT2LMHeadModel).")
    return lm.to(resolve_device(device)), prepare_tokenizer(tokenizer)


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Eval mode and ``requires_grad=False`` for every parameter (in place)."""
    model.eval()
    model.requires_grad_(False)
    return model


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


def attention_mask_for(model: PreTrainedModel, mask4: torch.Tensor) -> torch.Tensor:
    """Bool 4D mask -> the form the model's attention implementation expects (eager: additive)."""
    if model.config._attn_implementation == "eager":
        dtype = model.get_output_embeddings().weight.dtype
        zero, low = torch.tensor([0.0, torch.finfo(dtype).min], dtype=dtype, device=mask4.device)
        return torch.where(mask4, zero, low)
    return mask4


def forward_left_padded(
    model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache | None = None,
    cache_kw: str = "past_key_values",
) -> torch.Tensor:
    """Teacher-forced trunk pass over left-padded rows ``ids`` (B, L); returns hidden states (B, L, D).

    Position ids count real tokens only, so a row's positions do not depend on its padding.
    """
    mask = mask.bool()
    pos = (mask.long().cumsum(-1) - 1).clamp_(min=0)  # (B, L)
    kwargs = {cache_kw: cache, "use_cache": True} if cache is not None else {"use_cache": False}
    out = model.base_model(
        input_ids=ids, attention_mask=attention_mask_for(model, padded_causal_mask(mask)), position_ids=pos, **kwargs
    )
    return out.last_hidden_state


class IncrementalLM:
    """Batched KV-cached decoding over ``num_rows`` independent rows that may restart at any step.

    All rows share one :class:`~transformers.DynamicCache` of width ``S``; row ``n``'s real tokens are always the
    rightmost ``lengths[n]`` columns (restarts are spliced in right-aligned, older columns masked out). Each token
    gets position id = number of real tokens before it, so left padding never shifts absolute positions. Leading
    columns masked for every row are trimmed once there are more than ``max_slack`` of them, so ``S`` stays
    bounded over arbitrarily long rollouts. Attention uses a ready 4D mask (``sdpa``: bool, ``eager``: additive);
    padded queries attend to themselves so no row is ever fully masked (no NaN can enter the cache).

    ``step`` returns the trunk's last hidden state per row, (N, D); apply :attr:`head` for logits.
    """

    def __init__(self, model: PreTrainedModel, num_rows: int, max_slack: int = 16) -> None:
        if num_rows < 1:
            raise ValueError(f"num_rows must be >= 1, got {num_rows}.")
        self.model = model
        self.trunk = model.base_model  # e.g. GPT2Model: returns hidden states
        self.head = model.get_output_embeddings()  # (D -> V)
        self.num_rows = num_rows
        self.max_slack = max_slack
        self.device = next(model.parameters()).device
        if model.config._attn_implementation not in ("sdpa", "eager"):
            raise ValueError(
                f"IncrementalLM needs attention 'sdpa' or 'eager' (ready 4D masks), not "
                f"{model.config._attn_implementation!r}; call model.set_attn_implementation('sdpa') first."
            )
        params = inspect.signature(self.trunk.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.reset()

    def reset(self) -> None:
        """Forget every row; the next :meth:`step` must restart all rows."""
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # (N, S) bool
        self._pos: torch.Tensor | None = None  # (N,) position id of each row's next token
        self.lengths = np.zeros(self.num_rows, dtype=np.int64)  # real tokens per row (host)

    @property
    def cache_length(self) -> int:
        """Current cache width ``S`` (0 before the first step)."""
        return 0 if self._mask is None else int(self._mask.shape[1])

    def _attn_mask(self, mask4: torch.Tensor) -> torch.Tensor:
        return attention_mask_for(self.model, mask4)

    def _forward(self, ids: torch.Tensor, mask4: torch.Tensor, pos: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        out = self.trunk(
            input_ids=ids, attention_mask=self._attn_mask(mask4), position_ids=pos, use_cache=True,
            **{self._cache_kw: cache},
        )
        return out.last_hidden_state  # (B, Q, D)

    def _prefill(self, ids: np.ndarray, mask: np.ndarray) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """Left-padded contexts (R, Lp) through a fresh cache -> cache, mask (R, Lp), last hidden state (R, D)."""
        ids_t = torch.as_tensor(ids, device=self.device)
        mask_t = torch.as_tensor(mask, device=self.device).bool()  # (R, Lp)
        cache = DynamicCache()
        hidden = forward_left_padded(self.model, ids_t, mask_t, cache=cache, cache_kw=self._cache_kw)
        return cache, mask_t, hidden[:, -1]

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

    @torch.no_grad()
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
        restart_all = restart is None or bool(np.all(restart))
        if self._cache is None and not restart_all:
            raise ValueError("The first step (and the first after reset()) must restart every row.")
        rows = np.arange(self.num_rows) if restart_all else np.flatnonzero(restart)
        if rows.size and (input_ids is None or attention_mask is None):
            raise ValueError("Restarting rows need input_ids and attention_mask.")
        if restart_all:
            ids, mask = self._read_restarts(rows, input_ids, attention_mask)
            self._cache, self._mask, hidden = self._prefill(ids, mask)
            self._pos = torch.as_tensor(mask.sum(1), device=self.device)
            self.lengths = mask.sum(1)
            return hidden
        if tokens is None or tokens.shape != (self.num_rows,):
            raise ValueError(f"tokens must be a ({self.num_rows},) tensor when some rows continue.")
        hidden = self._decode(tokens, rows)
        if rows.size:
            hidden = self._splice(rows, *self._read_restarts(rows, input_ids, attention_mask), hidden)
        self._trim()
        return hidden

    def _decode(self, tokens: torch.Tensor, restart_rows: np.ndarray) -> torch.Tensor:
        """Append one token to every row (restarting rows get a dummy that :meth:`_splice` overwrites)."""
        if restart_rows.size:
            tokens = tokens.clone()
            tokens[torch.as_tensor(restart_rows, device=self.device)] = 0
        ones = torch.ones(self.num_rows, 1, dtype=torch.bool, device=self.device)
        self._mask = torch.cat([self._mask, ones], dim=1)  # (N, S + 1)
        hidden = self._forward(tokens[:, None], self._mask[:, None, None, :], self._pos[:, None], self._cache)
        self._pos = self._pos + 1
        self.lengths = self.lengths + 1
        return hidden[:, -1]  # (N, D)

    def _splice(self, rows: np.ndarray, ids: np.ndarray, mask: np.ndarray, hidden: torch.Tensor) -> torch.Tensor:
        """Prefill restarting rows and write them right-aligned into the shared cache."""
        cache, mask_t, new_hidden = self._prefill(ids, mask)
        width = ids.shape[1]
        grow = width - self.cache_length
        if grow > 0:  # prompt longer than the cache: pad the cache on the left (masked columns)
            self._pad_left(grow)
        rows_t = torch.as_tensor(rows, device=self.device)
        for shared, fresh in zip(self._cache.layers, cache.layers):
            shared.keys[rows_t, :, -width:] = fresh.keys
            shared.values[rows_t, :, -width:] = fresh.values
        self._mask[rows_t] = False
        self._mask[rows_t, -width:] = mask_t
        self._pos[rows_t] = mask_t.sum(1)
        self.lengths[rows] = mask.sum(1)
        hidden = hidden.clone()
        hidden[rows_t] = new_hidden
        return hidden

    def _pad_left(self, width: int) -> None:
        for layer in self._cache.layers:
            n, h, _, d = layer.keys.shape
            zeros = layer.keys.new_zeros(n, h, width, d)
            layer.keys = torch.cat([zeros, layer.keys], dim=2)
            layer.values = torch.cat([zeros, layer.values], dim=2)
        self._mask = torch.cat([self._mask.new_zeros(self.num_rows, width), self._mask], dim=1)

    def _trim(self) -> None:
        """Drop leading columns that every row masks once there are more than ``max_slack`` of them."""
        slack = self.cache_length - int(self.lengths.max())
        if slack <= self.max_slack:
            return
        for layer in self._cache.layers:
            layer.keys = layer.keys[:, :, slack:]
            layer.values = layer.values[:, :, slack:]
        self._mask = self._mask[:, slack:]


def _positive_index(model: PreTrainedModel) -> int:
    """Index of the positive class of a sentiment classifier (``POSITIVE``/``pos`` label, else class 1)."""
    for idx, label in model.config.id2label.items():
        if str(label).lower() in {"positive", "pos"}:
            return int(idx)
    if model.config.num_labels == 2:
        return 1
    raise ValueError(
        f"Cannot find the positive class among labels {model.config.id2label}; name it 'POSITIVE' in config.id2label."
    )


def _classifier_fn(
    reward_model: str | os.PathLike | PreTrainedModel,
    tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None,
    device: torch.device,
    batch_size: int,
) -> RewardFn:
    if isinstance(reward_model, PreTrainedModel):
        if tokenizer is None:
            raise ValueError("Pass tokenizer= together with a reward model object (or pass its path / HF id).")
        clf = reward_model
    else:
        clf = _from_pretrained(AutoModelForSequenceClassification, os.fspath(reward_model))
        tokenizer = os.fspath(reward_model) if tokenizer is None else tokenizer
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = _from_pretrained(AutoTokenizer, os.fspath(tokenizer))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if clf.config.pad_token_id is None:
        clf.config.pad_token_id = tokenizer.pad_token_id
    clf = freeze(clf.to(device))
    column = 0 if clf.config.num_labels == 1 else _positive_index(clf)
    n_ctx = getattr(clf.config, "max_position_embeddings", None) or getattr(clf.config, "n_positions", None) or 512
    max_length = min(int(tokenizer.model_max_length), 512, int(n_ctx))

    @torch.no_grad()
    def score(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
                padding_side="right", return_tensors="pt",  # right: positions start at 0, as unpadded
            ).to(device)
            out.append(clf(**batch).logits[:, column].float().cpu())  # (B,)
        return torch.cat(out).numpy()

    return score


def _vader_fn() -> RewardFn:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as err:
        raise ImportError(
            "reward_model='vader' needs the optional package vaderSentiment: pip install 'rlhf-gym[vader]'."
        ) from err
    analyzer = SentimentIntensityAnalyzer()
    return lambda texts: np.array([analyzer.polarity_scores(t)["compound"] for t in texts])


def make_reward_fn(
    reward_model: str | os.PathLike | PreTrainedModel | Callable[[list[str]], Sequence[float]] = DEFAULT_REWARD_MODEL,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
) -> RewardFn:
    """Batched, checked scorer ``list[str] -> np.ndarray (len,) float64``.

    ``reward_model``: an HF sequence classifier (id, path or object + ``tokenizer=``): score = positive-class
    logit when ``num_labels >= 2`` (class named POSITIVE/pos, else 1), the single logit when ``num_labels == 1``
    (format saved by ``runners.train_reward``); ``"vader"``: VADER compound score in [-1, 1] (optional
    ``vaderSentiment``); or any callable ``list[str] -> sequence of floats``. A wrong-length or non-finite result
    raises ``ValueError`` naming the reward function.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if isinstance(reward_model, str) and reward_model == "vader":
        fn, name = _vader_fn(), "vader"
    elif isinstance(reward_model, (str, os.PathLike, PreTrainedModel)):
        fn = _classifier_fn(reward_model, tokenizer, resolve_device(device), batch_size)
        name = type(reward_model).__name__ if isinstance(reward_model, PreTrainedModel) else os.fspath(reward_model)
    elif callable(reward_model):
        fn, name = reward_model, getattr(reward_model, "__name__", repr(reward_model))
    else:
        raise TypeError(
            "reward_model must be an HF classifier id/path/object, 'vader' or a callable, got "
            f"{type(reward_model).__name__}."
        )

    def checked(texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        scores = np.asarray(fn(list(texts)), dtype=np.float64).reshape(-1)
        if scores.shape != (len(texts),):
            raise ValueError(f"Reward function {name!r} returned {scores.size} scores for {len(texts)} texts.")
        if not np.isfinite(scores).all():
            raise ValueError(f"Reward function {name!r} returned a NaN/inf score; make it return finite floats.")
        return scores

    checked.__name__ = f"reward[{name}]"
    return checked
