"""Loading a causal LM and its tokenizer, shared by the text env's reference and the agent's policy.

- :func:`resolve_device`: ``"auto"`` -> CUDA when present, else CPU.
- :func:`load_causal_lm`: a causal LM plus its tokenizer from an HF id, a local directory or ready objects,
  with an actionable error when the hub is unreachable; :func:`freeze` makes a frozen eval-mode copy.
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)


def is_peft(model: Any) -> bool:
    """Whether ``model`` is a peft ``PeftModel`` (an adapter over a base model), without importing peft."""
    return callable(getattr(model, "disable_adapter", None)) and callable(getattr(model, "get_base_model", None))


def unwrap(model: Any) -> PreTrainedModel:
    """The causal LM that runs: a ``PeftModel``'s base model with its adapter layers injected, else ``model``."""
    inner = model.get_base_model() if is_peft(model) else model
    if not isinstance(inner, PreTrainedModel):
        raise TypeError(f"expected a PreTrainedModel or a peft PeftModel over one, got {type(model).__name__}.")
    return inner


def adapter_off(model: Any) -> contextlib.AbstractContextManager[Any]:
    """The context in which a ``PeftModel`` runs as its base model (``disable_adapter()``); a no-op otherwise."""
    return model.disable_adapter() if is_peft(model) else contextlib.nullcontext()


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


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DtypeArg = str | torch.dtype | None


def check_dtype(dtype: DtypeArg, name: str = "dtype") -> torch.dtype | None:
    """None (keep / float32 default of the caller), or one of float32, bfloat16, float16 (a dtype or its name)."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"{name} must be None or one of {list(DTYPES)} (or the torch dtypes), got {dtype!r}.")


def model_in_dtype(model: PreTrainedModel, dtype: DtypeArg, name: str = "dtype") -> PreTrainedModel:
    """``model`` unchanged when ``dtype`` is None or already its dtype; else refuses to convert a caller's object."""
    want = check_dtype(dtype, name)
    if want is None or model.dtype == want:
        return model
    raise ValueError(f"the model object is {model.dtype}, but {name}={dtype!r}: convert it yourself "
                     f"(model.to(torch.{str(want).split('.')[-1]})) or pass a path, which loads in {name}.")


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding, and a pad token: when the tokenizer has none, EOS doubles as pad (TRL's choice for GPT-2;
    attention masks make the two unambiguous, and the vocabulary and embeddings stay unchanged). The caller's
    tokenizer is never modified: a tokenizer that needs a change is copied first."""
    if tokenizer.pad_token is not None and tokenizer.padding_side == "left":
        return tokenizer
    tokenizer = copy.deepcopy(tokenizer)
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
    dtype: DtypeArg = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (or accept) a causal LM and its tokenizer and move the model to ``device`` (in place for objects).

    The tokenizer gets a pad token and ``padding_side="left"`` (see :func:`prepare_tokenizer`, on a copy). A model
    object needs ``tokenizer=`` and keeps its dtype (``dtype`` must be None or equal to it); a path or hub id
    loads its own tokenizer unless one is given, with weights in ``dtype`` (default float32).
    """
    if isinstance(model, PreTrainedModel) or is_peft(model):
        if tokenizer is None:
            raise ValueError("Pass tokenizer= together with a model object (or pass a model path / HF id).")
        checked = model_in_dtype(unwrap(model), dtype)
        lm: Any = model if is_peft(model) else checked  # a PeftModel stays wrapped (its adapter is the policy)
    elif isinstance(model, (str, os.PathLike)):
        lm = _from_pretrained(AutoModelForCausalLM, os.fspath(model), dtype=check_dtype(dtype) or torch.float32)
        tokenizer = os.fspath(model) if tokenizer is None else tokenizer
    else:
        raise TypeError(f"model must be an HF id, a local path or a PreTrainedModel, got {type(model).__name__}.")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = _from_pretrained(AutoTokenizer, os.fspath(tokenizer))
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"tokenizer must be a path, an HF id or a tokenizer, got {type(tokenizer).__name__}.")
    if unwrap(lm).get_output_embeddings() is None:
        raise ValueError(f"{type(lm).__name__} has no LM head; pass a causal LM (e.g. GPT2LMHeadModel).")
    return lm.to(resolve_device(device)), prepare_tokenizer(tokenizer)


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Eval mode and ``requires_grad=False`` for every parameter (in place)."""
    model.eval()
    model.requires_grad_(False)
    return model
