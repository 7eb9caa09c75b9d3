"""Reward functions of the text env: a sentiment classifier, ``"vader"`` or a plain callable, as one
checked batched ``list[str] -> np.ndarray`` scorer (:func:`make_reward_fn`); :class:`RewardSet`: several
weighted reward functions, also of the form ``fn(prompts, completions, **columns)``."""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from envs.lm.compute import fuse_gelu
from envs.lm.loading import DtypeArg, _from_pretrained, check_dtype, freeze, model_in_dtype, resolve_device

RewardFn = Callable[[list[str]], np.ndarray]
DEFAULT_REWARD_MODEL = "lvwerra/distilbert-imdb"
REWARD_KINDS = (
    "Accepted reward models: a sequence-classification model with a trained score head (an HF id or directory such "
    "as 'lvwerra/distilbert-imdb', or a directory written by `python -m runners.train_reward`), 'vader', or a "
    "callable list[str] -> one float per text."
)


def _positive_index(model: PreTrainedModel) -> int:
    """Index of the positive class of a sentiment classifier (``POSITIVE``/``pos`` label, else class 1)."""
    for idx, label in (model.config.id2label or {}).items():  # None only on a config without labels
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
    dtype: DtypeArg = None,
) -> RewardFn:
    if isinstance(reward_model, PreTrainedModel):
        if tokenizer is None:
            raise ValueError("Pass reward_tokenizer= together with a reward model object, or reward_model=(model, "
                             "tokenizer) (or pass its path / HF id, which loads its own tokenizer).")
        if "ForSequenceClassification" not in type(reward_model).__name__:
            raise ValueError(f"reward model object is a {type(reward_model).__name__}, not a sequence classifier. "
                             f"{REWARD_KINDS}")
        clf = model_in_dtype(reward_model, dtype, "reward_dtype")
    else:
        clf, info = _from_pretrained(AutoModelForSequenceClassification, os.fspath(reward_model),
                                     output_loading_info=True, dtype=check_dtype(dtype) or torch.float32)
        missing = list(info.get("missing_keys", []))
        if missing:  # e.g. a causal LM: transformers would only warn and score with a random head
            arch = getattr(clf.config, "architectures", None)
            raise ValueError(
                f"{os.fspath(reward_model)!r} is not a trained sequence-classification reward model (architectures "
                f"{arch}; weights missing from it: {missing[:4]}). {REWARD_KINDS}"
            )
        tokenizer = os.fspath(reward_model) if tokenizer is None else tokenizer
    if isinstance(tokenizer, (str, os.PathLike)):
        tok: PreTrainedTokenizerBase = _from_pretrained(AutoTokenizer, os.fspath(tokenizer))
    else:
        tok = tokenizer
    if tok.pad_token is None:
        tok = copy.deepcopy(tok)  # never modify the caller's tokenizer
        tok.pad_token = tok.eos_token
    if clf.config.pad_token_id is None:
        clf.config.pad_token_id = tok.pad_token_id
    # transformers decorates PreTrainedModel.to with functools.wraps(nn.Module.to), which mypy then reads
    # as unbound (the device taken for self): the ignore is for that wrong library type
    clf = fuse_gelu(freeze(clf.to(device)))  # type: ignore[arg-type]  # and GPT-2's GELU in one kernel, in place
    column = 0 if clf.config.num_labels == 1 else _positive_index(clf)
    n_ctx = getattr(clf.config, "max_position_embeddings", None) or getattr(clf.config, "n_positions", None) or 512
    max_length = min(int(tok.model_max_length), 512, int(n_ctx))

    return _ClassifierScore(tok, clf, column, max_length, device, batch_size)


class _ClassifierScore:
    """A sequence classifier's score column of batches of texts (a class, not a closure: envs pickle)."""

    def __init__(self, tok: PreTrainedTokenizerBase, clf: PreTrainedModel, column: int, max_length: int,
                 device: torch.device, batch_size: int) -> None:
        self.tok, self.clf, self.column, self.max_length = tok, clf, column, max_length
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tok(
                texts[start : start + self.batch_size], padding=True, truncation=True, max_length=self.max_length,
                padding_side="right", return_tensors="pt",  # right: positions start at 0, as unpadded
            ).to(self.device)
            out.append(self.clf(**batch).logits[:, self.column].float().cpu())  # (B,)
        return torch.cat(out).numpy()


def _vader_fn() -> RewardFn:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as err:
        raise ImportError(
            "reward_model='vader' needs the optional package vaderSentiment: pip install 'rlhf-gym[vader]'."
        ) from err
    return _VaderScore(SentimentIntensityAnalyzer())


class _VaderScore:
    """VADER's compound score per text (picklable)."""

    def __init__(self, analyzer: Any) -> None:
        self.analyzer = analyzer

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.array([self.analyzer.polarity_scores(t)["compound"] for t in texts])


def _scores_array(raw: Any, name: str, n: int) -> np.ndarray:
    """The reward function's result as (n,) float64, or one clear TypeError naming the function and the result."""
    shown = repr(raw)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    problem = None
    if raw is None or isinstance(raw, (str, bytes, dict, bool, np.bool_)):
        problem = type(raw).__name__
    elif isinstance(raw, torch.Tensor):
        raw = raw.detach().cpu().numpy()
    elif not isinstance(raw, (np.ndarray, list, tuple, int, float, np.number)):
        problem = type(raw).__name__  # generators, sets, arbitrary objects
    if problem is None:
        try:
            arr = np.asarray(raw)
        except (TypeError, ValueError):
            arr = np.asarray(raw, dtype=object)
        if arr.dtype.kind not in "iuf":
            problem = f"{type(raw).__name__} of {arr.dtype.name if arr.dtype.kind != 'O' else 'objects'}"
    if problem is not None:
        raise TypeError(
            f"Reward function {name!r} returned {problem} {shown}; it must return {n} real numbers (one finite "
            f"float per text) as a list, numpy array or tensor."
        )
    return arr.astype(np.float64).reshape(-1)


def make_reward_fn(
    reward_model: str | os.PathLike | PreTrainedModel | Callable[[list[str]], Sequence[float]] = DEFAULT_REWARD_MODEL,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
    dtype: DtypeArg = None,
) -> RewardFn:
    """Batched, checked scorer ``list[str] -> np.ndarray (len,) float64``.

    A classifier object comes with its ``tokenizer`` (the reward model's own, not the policy's), or as a
    ``(model, tokenizer)`` pair; a path loads its own tokenizer and its weights in ``dtype`` (default float32).

    ``reward_model``: an HF sequence classifier (id, path or object + ``tokenizer=``): score = positive-class
    logit when ``num_labels >= 2`` (class named POSITIVE/pos, else 1), the single logit when ``num_labels == 1``
    (format saved by ``runners.train_reward``); ``"vader"``: VADER compound score in [-1, 1] (optional
    ``vaderSentiment``); or any callable ``list[str] -> sequence of floats``. A wrong-length or non-finite result
    raises ``ValueError`` naming the reward function.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    fn: Callable[[list[str]], Any]  # checked by _scores_array
    if isinstance(reward_model, tuple) and len(reward_model) == 2 and isinstance(reward_model[0], PreTrainedModel):
        reward_model, tokenizer = reward_model
    if isinstance(reward_model, str) and reward_model == "vader":
        fn, name = _vader_fn(), "vader"
    elif isinstance(reward_model, (str, os.PathLike, PreTrainedModel)):
        fn = _classifier_fn(reward_model, tokenizer, resolve_device(device), batch_size, dtype)
        name = type(reward_model).__name__ if isinstance(reward_model, PreTrainedModel) else os.fspath(reward_model)
    elif callable(reward_model):
        fn, name = reward_model, getattr(reward_model, "__name__", repr(reward_model))
    else:
        raise TypeError(
            "reward_model must be an HF classifier id/path/object, 'vader' or a callable, got "
            f"{type(reward_model).__name__}."
        )

    return CheckedReward(fn, name)


class CheckedReward:
    """:func:`make_reward_fn`'s result: ``fn`` with its output checked (a class, so that envs pickle)."""

    def __init__(self, fn: Callable[[list[str]], Any], name: str) -> None:
        self.fn, self.name = fn, name
        self.__name__ = f"reward[{name}]"

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        name = self.name
        scores = _scores_array(self.fn(list(texts)), name, len(texts))
        if scores.shape != (len(texts),):
            raise ValueError(f"Reward function {name!r} returned {scores.size} scores for {len(texts)} texts.")
        if not np.isfinite(scores).all():
            raise ValueError(f"Reward function {name!r} returned a NaN/inf score; make it return finite floats.")
        return scores


def _takes_prompts(fn: Callable[..., Any]) -> bool:
    """True for the ``fn(prompts, completions, **columns)`` form: two or more positional parameters (or a
    ``completions`` parameter); one positional parameter is the ``list[str]`` form (the finished texts)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: the plain form
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.name == "completions" for p in params) or any(
        p.kind == p.VAR_POSITIONAL for p in params)


def _column_names(fn: Callable[..., Any], columns: dict[str, list[Any]]) -> list[str]:
    """The dataset columns ``fn`` accepts as keywords: all with ``**kwargs``, else those it names."""
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return list(columns)
    return [c for c in columns if c in params and params[c].kind != inspect.Parameter.POSITIONAL_ONLY]


def _optional_scores(raw: Any, name: str, n: int) -> np.ndarray:
    """(n,) float64 with NaN where the function returned None (not applicable); other entries finite."""
    if isinstance(raw, (list, tuple)) and any(x is None for x in raw):
        if len(raw) != n:
            raise ValueError(f"Reward function {name!r} returned {len(raw)} scores for {n} completions.")
        known = [i for i, x in enumerate(raw) if x is not None]
        out = np.full(n, np.nan)
        if known:
            out[known] = _scores_array([raw[i] for i in known], name, len(known))
        values = out[known]
    else:
        out = _scores_array(raw, name, n)
        if out.shape != (n,):
            raise ValueError(f"Reward function {name!r} returned {out.size} scores for {n} completions.")
        values = out
    if not np.isfinite(values).all():
        raise ValueError(f"Reward function {name!r} returned a NaN/inf score; return finite floats, or None for a "
                         "completion it does not apply to.")
    return out


class RewardSet:
    """Several reward functions, weighted: ``total = Σ_i w_i · score_i`` per completion.

    Each entry of ``reward_models`` is anything :func:`make_reward_fn` accepts (a classifier, ``"vader"``, a
    callable ``list[str] -> scores`` of the finished texts) or a callable ``fn(prompts, completions, **columns)
    -> scores`` that receives the prompts (as the dataset holds them: strings, or chat messages), the decoded
    completions and, as keyword lists aligned with them, the dataset's other columns of those rows (all of them
    with ``**kwargs``, else those it names). A score may be None: the function does not apply to that completion
    and adds nothing to its total (TRL's rule); a completion no function applies to raises ``ValueError``.
    ``weights`` default to 1 each.
    """

    def __init__(self, reward_models: Any, weights: Sequence[float] | None = None, device: str | torch.device = "auto",
                 batch_size: int = 64, tokenizer: Any = None, dtype: DtypeArg = None) -> None:
        pair = isinstance(reward_models, tuple) and len(reward_models) == 2 and isinstance(reward_models[0],
                                                                                          PreTrainedModel)
        listed = isinstance(reward_models, (list, tuple)) and not pair  # a (model, tokenizer) pair is ONE reward
        models = list(reward_models) if listed else [reward_models]
        if not models:
            raise ValueError("pass at least one reward function (reward_model=fn or a list of them).")
        w = [1.0] * len(models) if weights is None else list(weights)
        if len(w) != len(models) or not all(isinstance(x, (int, float)) and np.isfinite(x) for x in w):
            raise ValueError(f"reward_weights must be {len(models)} finite numbers (one per reward function), "
                             f"got {weights!r}.")
        self.weights = np.asarray(w, dtype=np.float64)
        self.fns: list[tuple[str, Callable[..., Any], bool]] = []  # (name, fn, takes prompts)
        for m in models:
            full = callable(m) and not isinstance(m, PreTrainedModel) and _takes_prompts(m)
            fn = m if full else make_reward_fn(m, device=device, batch_size=batch_size, tokenizer=tokenizer,
                                               dtype=dtype)
            name = getattr(m, "__name__", None) if callable(m) and not isinstance(m, (PreTrainedModel, tuple)) else None
            name = str(name or (m if isinstance(m, (str, os.PathLike)) else type(m[0] if isinstance(m, tuple) else m)
                                .__name__))
            taken = {n for n, _, _ in self.fns}
            unique = name if name not in taken else next(f"{name}_{i}" for i in range(2, len(taken) + 2)
                                                         if f"{name}_{i}" not in taken)
            self.fns.append((unique, fn, full))
        self.names = [n for n, _, _ in self.fns]

    def __call__(self, prompts: list[Any], completions: list[str], texts: list[str],
                 columns: dict[str, list[Any]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The weighted totals (n,) and each function's scores (n,) (NaN = not applicable) of ``n`` completions."""
        n = len(completions)
        parts: dict[str, np.ndarray] = {}
        for name, fn, full in self.fns:
            if full:
                raw = fn(list(prompts), list(completions), **{c: list(columns[c]) for c in _column_names(fn, columns)})
                parts[name] = _optional_scores(raw, name, n)
            else:
                parts[name] = fn(list(texts))  # checked by make_reward_fn
        scores = np.stack([parts[name] for name in self.names])  # (F, n)
        none = np.isnan(scores).all(axis=0)
        if none.any():
            row = int(np.flatnonzero(none)[0])
            raise ValueError(f"every reward function returned None for completion {row} (prompt {prompts[row]!r}); "
                             "at least one must score each completion.")
        return np.nansum(self.weights[:, None] * scores, axis=0), parts
