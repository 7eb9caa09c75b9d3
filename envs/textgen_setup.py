"""Argument checks and loading for ``TextGen-IMDB-v0`` (used by :class:`envs.textgen_core.TextGenCore` and both envs).

- :func:`check_int`, :func:`check_kl_coef`, :func:`check_ref_mode`, :func:`check_temperature`,
  :func:`check_missing_eos_penalty`,
  :func:`check_render_mode`: the constructor arguments, with one actionable error each.
- :func:`model_devices`: where the reference and the reward model run; :func:`reference_model`: the frozen
  reference LM and the tokenizer; :func:`check_model` checks them against the episode length
  (:func:`model_context`: the model's context).
- :func:`prompt_table`: the first tokens of every usable review.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from envs.lm import freeze, load_causal_lm
from envs.lm.loading import DtypeArg, check_dtype, is_peft, resolve_device
from envs.prompts import adds_bos, tokenize_prompts

DEFAULT_MODEL = "lvwerra/gpt2-imdb"

ModelArg = str | os.PathLike | PreTrainedModel


def check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def check_kl_coef(value: Any) -> float:
    """A finite float >= 0 (0 removes the KL term from the reward; the reference still runs for ``ref_logprob``)."""
    number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0:
        raise ValueError(f"kl_coef must be a finite number >= 0, got {value!r}.")
    return float(value)


REF_MODES = ("per_step", "one_pass")


def check_ref_mode(value: Any) -> str:
    """``"per_step"`` (the reference decodes beside the policy) or ``"one_pass"`` (one teacher-forced pass per
    finished response); the two reward contracts are in :class:`envs.textgen.TextGenEnv`, section Rewards."""
    if value not in REF_MODES:
        raise ValueError(f"ref_mode must be one of {list(REF_MODES)}, got {value!r}.")
    return str(value)


def check_temperature(value: Any) -> float:
    """A finite float > 0: the sampling temperature the policy samples at (the reference's logits are divided
    by it too, so the KL compares the two distributions at the same temperature)."""
    number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {value!r}.")
    return float(value)


def check_missing_eos_penalty(value: Any) -> float | None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise ValueError(f"missing_eos_penalty must be None or a finite number, got {value!r}.")
    return value


def check_render_mode(render_mode: str | None, allowed: Sequence[str]) -> str | None:
    if render_mode is not None and render_mode not in allowed:
        raise ValueError(f"render_mode must be None or one of {list(allowed)}, got {render_mode!r}.")
    return render_mode


def model_devices(
    device: str | torch.device, ref_device: str | torch.device | None, reward_device: str | torch.device | None,
    model: Any,
) -> tuple[torch.device, torch.device, torch.device]:
    """The env's device and those of the reference and the reward model (None: ``device``). A PeftModel policy's
    reference is the policy itself (adapter disabled), so it stays on the policy's ``device``."""
    dev = resolve_device(device)
    ref = dev if ref_device is None else resolve_device(ref_device)
    if is_peft(model) and ref != dev:
        raise ValueError(f"ref_device={str(ref_device)!r}: a PeftModel policy's reference is the policy itself with "
                         f"the adapter disabled, on the policy's device {str(dev)!r}; leave ref_device=None.")
    return dev, ref, dev if reward_device is None else resolve_device(reward_device)


def reference_model(
    model: ModelArg, tokenizer: Any, ref_model: ModelArg | None, device: torch.device, dtype: DtypeArg = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Frozen reference LM (default: a copy of the initial ``model``) in ``dtype`` (None: a path loads in float32,
    an object's copy keeps its dtype) and the tokenizer."""
    source = model if ref_model is None else ref_model
    if tokenizer is None and ref_model is not None and isinstance(model, (str, os.PathLike)):
        tokenizer = model  # the policy's tokenizer
    if is_peft(source):  # the same weights, run with the adapter disabled: never copied, never frozen
        if ref_model is not None:
            raise ValueError("ref_model must be a plain causal LM; a PeftModel policy's reference is its own base "
                             "model (adapter disabled): leave ref_model=None.")
        return load_causal_lm(source, tokenizer, device, dtype)
    if isinstance(source, PreTrainedModel):
        source = copy.deepcopy(source)  # never freeze or move the caller's (trainable) model
        want = check_dtype(dtype, "ref_dtype")
        if want is not None:  # our copy: converting it leaves the caller's model alone
            source = cast(PreTrainedModel, nn.Module.to(source, want))
    ref, tok = load_causal_lm(source, tokenizer, device, dtype)
    return freeze(ref), tok


def model_context(model: PreTrainedModel) -> int | None:
    """The model's context in positions (``n_positions`` / ``max_position_embeddings``), None when unknown."""
    config = model.config
    n_ctx = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return None if n_ctx is None else int(n_ctx)


def check_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seq_len: int, vocab_size: int) -> None:
    """Episodes of ``seq_len`` tokens fit the model's context, the tokenizer fits its ``vocab_size``, EOS exists."""
    n_ctx = model_context(model)
    if n_ctx is not None and seq_len > n_ctx:
        raise ValueError(
            f"prompt_max_len + max_new_tokens = {seq_len} exceeds the model context ({n_ctx} positions); "
            "shorten prompts or responses."
        )
    if len(tokenizer) > vocab_size:
        raise ValueError(f"The tokenizer has {len(tokenizer)} tokens but the LM head only {vocab_size}.")
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer needs an EOS token (episodes end on it).")


def episode_eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, given: Any = None) -> np.ndarray:
    """The ids that end an episode, (E,) int64: ``given`` (a sequence of ids), else every EOS id of the model's
    ``generation_config`` (e.g. Llama-3-Instruct's ``[<|end_of_text|>, <|eot_id|>]``) plus the tokenizer's EOS,
    as ``generate()`` stops on them."""
    vocab = int(model.get_output_embeddings().weight.shape[0])
    if given is not None:
        ids = [given] if isinstance(given, (int, np.integer)) else list(given)
        if not ids or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < vocab
                          for i in ids):
            raise ValueError(f"eos_token_ids must be token ids in [0, {vocab}), got {given!r}.")
        return np.unique(np.asarray(ids, dtype=np.int64))
    found = [tokenizer.eos_token_id]
    gen = getattr(model, "generation_config", None)
    gen_eos = getattr(gen, "eos_token_id", None)
    found += list(gen_eos) if isinstance(gen_eos, (list, tuple)) else [gen_eos]
    ids = sorted({int(i) for i in found if isinstance(i, (int, np.integer)) and 0 <= i < vocab})
    return np.asarray(ids, dtype=np.int64)


def prompt_table(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, prompt_min_len: int, prompt_max_len: int,
    add_bos: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``prompt_max_len`` tokens (M, P) int64, right padded, and their counts (M,) int64 of every text with
    at least ``prompt_min_len`` tokens (BOS first when :func:`envs.prompts.adds_bos`); raises if there is none."""
    if texts:
        bos = adds_bos(tokenizer, add_bos)
        table, lengths = tokenize_prompts(texts, tokenizer, prompt_max_len, bos)  # (M0, P), (M0,)
    else:
        table, lengths = np.zeros((0, prompt_max_len), np.int64), np.zeros(0, np.int64)
    keep = lengths >= prompt_min_len
    if not keep.any():
        raise ValueError(
            f"The dataset has no review with at least prompt_min_len={prompt_min_len} tokens "
            f"({len(texts)} texts); pass a non-empty dataset."
        )
    return table[keep], lengths[keep]
