"""Loading a causal LM and its tokenizer, shared by the text env's reference and the agent's policy.

- :func:`resolve_device`: ``"auto"`` -> CUDA when present, else CPU.
- :func:`load_causal_lm`: a causal LM plus its tokenizer from an HF id, a local directory or ready objects,
  with an actionable error when the hub is unreachable; :func:`freeze` makes a frozen eval-mode copy.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)


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
    # transformers decorates PreTrainedModel.to with functools.wraps(nn.Module.to), which mypy then reads
    # as unbound (the device taken for self): the ignore is for that wrong library type
    return lm.to(resolve_device(device)), prepare_tokenizer(tokenizer)  # type: ignore[arg-type]


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Eval mode and ``requires_grad=False`` for every parameter (in place)."""
    model.eval()
    model.requires_grad_(False)
    return model
