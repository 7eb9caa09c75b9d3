"""Teacher-forced scoring of finished responses: one forward pass gives every token's ``log p(a_t | s_t)``.

:func:`response_logprobs` is what the text env's one-pass reference mode runs (``ref_mode="one_pass"`` of
``TextGen-IMDB-v0``) instead of one cached decoding step per token: the same numbers up to float rounding
(the batched decode and the teacher-forced pass sum in a different order), at the cost of one prefill.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from envs.lm.kv_cache import IncrementalLM, forward_left_padded

__all__ = ["response_logprobs"]


def response_logprobs(
    lm: IncrementalLM, input_ids: np.ndarray, lengths: np.ndarray, new_tokens: np.ndarray,
    eos_token_ids: np.ndarray | int, min_new_tokens: int = 0, temperature: float = 1.0,
) -> torch.Tensor:
    """(R, K) float32 ``log p(a_i | prompt, a_<i)`` of the last ``new_tokens[r]`` tokens of each row, in one pass.

    ``input_ids`` (R, L) int64 left-padded rows whose last ``lengths[r]`` tokens are real (prompt + response);
    ``new_tokens`` (R,) response lengths (>= 1, < lengths); ``K = max(new_tokens)``: row ``r``'s log-probs sit in
    its LAST ``new_tokens[r]`` columns (right aligned, like the tokens; the columns before are 0). The ``i``-th
    response token (0-based) with ``i < min_new_tokens`` is scored under the distribution renormalised without
    EOS (every id of ``eos_token_ids``: EOS was not allowed there). Runs without autograd inside ``lm.autocast()``
    (its autocast dtype, a reference's adapter disabled) through ``lm.head``, the model's own logits path, the
    logits divided by ``temperature`` (the policy's sampling temperature, as the per-step reference does).
    """
    device = lm.device
    width = int(lengths.max())  # crop the common left padding
    K = int(new_tokens.max())
    ids_np = input_ids[:, -width:]
    mask_np = np.arange(width)[None, :] >= width - lengths[:, None]  # (R, w) real tokens
    ids = torch.as_tensor(np.where(mask_np, ids_np, 0), device=device)
    mask = torch.as_tensor(mask_np, device=device)
    with torch.no_grad(), lm.autocast():
        hidden = forward_left_padded(lm.model, ids, mask)  # (R, w, D)
        # the state before each of the last K tokens predicts it: positions w-K-1 .. w-2
        logits = lm.head(hidden[:, width - K - 1: width - 1]).float()  # (R, K, V)
    if temperature != 1.0:
        logits = logits / temperature
    index = torch.arange(K, device=device)
    before = (index[None, :] - (K - torch.as_tensor(new_tokens, device=device))[:, None])  # (R, K) tokens before
    if min_new_tokens > 0:
        blocked = (before >= 0) & (before < min_new_tokens)  # (R, K) EOS was masked at these tokens
        eos = torch.as_tensor(np.atleast_1d(eos_token_ids), device=device)  # (E,)
        logits[..., eos] = logits[..., eos].masked_fill(blocked[..., None], float("-inf"))
    targets = ids[:, width - K:]  # (R, K) the scored tokens
    logp = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (R, K)
    return logp.masked_fill(before < 0, 0.0)
