"""What turns a causal LM's trunk into ``model(ids).logits``: the logits head and the per-layer attention masks.

- :class:`LogitsHead`: the output embeddings plus the model's own logit post-processing (Cohere's
  ``logit_scale``, Granite's ``logits_scaling``, Gemma 2/3's ``final_logit_softcapping``), so rewards, KL and the
  PPO ratio come from the distribution ``generate()`` samples.
- :func:`layer_masks`: a ready bool 4D mask -> what the trunk's layers need: one mask, one sliding-window mask
  for every layer (Mistral), or a ``{"full_attention": ..., "sliding_attention": ...}`` dict (Gemma 2/3, Qwen2
  with ``use_sliding_window``); eager attention gets additive masks.
- :func:`check_logits_path`: one probe forward at construction that compares the trunk + :class:`LogitsHead` with
  ``model(ids).logits`` and refuses a model whose logits are computed some other way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

KNOWN_LAYER_TYPES = ("full_attention", "sliding_attention")


def text_config(model: PreTrainedModel) -> Any:
    """The (text) config of a causal LM: ``config.get_text_config()`` when there is one."""
    get = getattr(model.config, "get_text_config", None)
    return get() if callable(get) else model.config


class LogitsHead:
    """``hidden (..., D) -> logits (..., V)`` exactly as the model's own forward computes them.

    The LM head, then ``* logit_scale`` (Cohere), ``/ logits_scaling`` (Granite) and ``cap * tanh(x / cap)`` with
    ``cap = final_logit_softcapping`` (Gemma 2/3), each only when the config sets it. A plain callable, not a
    module: the LM head's weights stay where the model holds them (state dicts keep their keys).
    """

    def __init__(self, model: PreTrainedModel) -> None:
        proj = model.get_output_embeddings()
        if proj is None:
            raise ValueError(f"{type(model).__name__} has no LM head; pass a causal LM (e.g. GPT2LMHeadModel).")
        self.proj: nn.Module = proj
        cfg = text_config(model)
        self.scale = _number(getattr(cfg, "logit_scale", None))
        self.divide = _number(getattr(cfg, "logits_scaling", None))
        self.softcap = _number(getattr(cfg, "final_logit_softcapping", None))

    @property
    def weight(self) -> torch.Tensor:
        """The LM head's weight (V, D)."""
        weight = self.proj.weight
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"the LM head {type(self.proj).__name__} has no weight tensor")
        return weight

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.post(self.proj(hidden))

    def post(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's post-processing of the LM head's output (identity for most models)."""
        if self.scale is not None:
            logits = logits * self.scale
        if self.divide is not None:
            logits = logits / self.divide
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def sliding_window(model: PreTrainedModel) -> tuple[int | None, list[str] | None]:
    """``(window, layer_types)``: the sliding window of the model's sliding layers (None: no layer slides) and
    the per-layer attention types (None: one mask for every layer)."""
    cfg = text_config(model)
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if types is not None:
        unknown = sorted(set(types) - set(KNOWN_LAYER_TYPES))
        if unknown:
            raise ValueError(
                f"{type(model).__name__} has attention layers of type {unknown}; rlhf-gym supports "
                f"{list(KNOWN_LAYER_TYPES)} (ready 4D masks). Use a model without them."
            )
        if "sliding_attention" not in types:
            return None, None
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        return None, None
    return window, None if types is None else list(types)


def additive(model: PreTrainedModel, mask4: torch.Tensor) -> torch.Tensor:
    """Bool 4D mask -> the form the model's attention implementation expects (eager: additive)."""
    if model.config._attn_implementation == "eager":
        dtype = model.get_output_embeddings().weight.dtype
        zero, low = torch.tensor([0.0, torch.finfo(dtype).min], dtype=dtype, device=mask4.device)
        return torch.where(mask4, zero, low)
    return mask4


def layer_masks(
    model: PreTrainedModel, mask4: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Bool (B, 1, Q, K) mask + query positions (B, Q) and key positions (B, K) -> the trunk's ``attention_mask``.

    Sliding layers see only keys with ``q_pos - k_pos < window`` (the rule of ``transformers.masking_utils``).
    """
    window, types = sliding_window(model)
    if window is None:
        return additive(model, mask4)
    near = (q_pos[:, :, None] - k_pos[:, None, :]) < window  # (B, Q, K)
    sliding = mask4 & near[:, None]  # (B, 1, Q, K)
    if types is None:  # every layer slides (Mistral)
        return additive(model, sliding)
    return {"full_attention": additive(model, mask4), "sliding_attention": additive(model, sliding)}


def probe_length(model: PreTrainedModel) -> int:
    """Tokens of the probe of :func:`check_logits_path`: 16, or a little more than a short sliding window."""
    window, _ = sliding_window(model)
    cfg = text_config(model)
    n_ctx = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 16
    want = 16 if window is None or window > 60 else window + 4
    return max(1, min(want, int(n_ctx)))


@torch.no_grad()
def check_logits_path(model: PreTrainedModel, head: LogitsHead, trunk_forward: Any) -> None:
    """Refuse a model whose trunk + :class:`LogitsHead` differ from ``model(ids).logits`` on one probe sequence.

    ``trunk_forward(model, ids, mask) -> hidden (1, P, D)`` is the teacher-forced pass the env and the agent use.
    """
    length = probe_length(model)
    vocab = int(head.weight.shape[0])
    device = head.weight.device
    ids = (torch.arange(length, device=device)[None] * 7919 + 3) % vocab  # (1, P) a fixed spread of ids
    mask = torch.ones_like(ids)
    was_training = model.training
    model.eval()
    try:
        want = model(input_ids=ids, use_cache=False).logits.float()  # (1, P, V)
        got = head(trunk_forward(model, ids, mask)).float()
    finally:
        model.train(was_training)
    tol = _tolerance(head.weight.dtype) * max(1.0, float(want.abs().max()))
    err = float((got - want).abs().max())
    if not math.isfinite(err) or err > tol:
        raise ValueError(
            f"{type(model).__name__}: the trunk + LM head differ from model(ids).logits by {err:.3g} (> {tol:.3g}) "
            "on a probe sequence: this architecture computes its logits in a way rlhf-gym does not reproduce "
            "(an unknown logit post-processing or attention pattern). Please report it with the model's config."
        )


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float32 else (2e-2 if dtype == torch.float16 else 6e-2)
