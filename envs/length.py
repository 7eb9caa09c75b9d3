"""Response-length controls of ``TextGen-IMDB-v0``: a per-episode length sampler and the EOS action mask.

The controls users of HF ``generate()`` and TRL's gpt2-sentiment example know:

- ``max_new_tokens``: an int (every episode may generate that many tokens) or a range ``(lo, hi)``:
  each episode draws its own limit uniformly from ``lo..hi`` inclusive, like TRL's ``LengthSampler``
  (:class:`LengthSampler`). A fixed int draws nothing, so it leaves the env's random stream unchanged.
- ``min_new_tokens``: EOS (every id that ends an episode) is not an allowed action before that many tokens
  were generated. This stays honest RL: the env exposes the allowed actions as ``info["action_mask"]`` (1 = allowed, the
  Gymnasium toy-text / sb3-contrib MaskablePPO convention), the agent samples from the masked
  distribution, and a masked action makes ``step`` raise (:func:`eos_mask_rows`).
- ``missing_eos_penalty``: subtracted from the score of an episode that hit its length limit without
  emitting EOS (the name and meaning of TRL's option).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class LengthSampler:
    """Per-episode response-length limits, uniform on ``lo..hi`` inclusive (``lo == hi``: fixed).

    ``LengthSampler(16)`` always gives 16; ``LengthSampler((4, 16))`` gives 4, 5, ..., 16 equally often.
    """

    def __init__(self, spec: int | Sequence[int]) -> None:
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            lo = hi = int(spec)
        elif isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 2 and all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in spec):
            lo, hi = int(spec[0]), int(spec[1])
        else:
            raise ValueError(f"max_new_tokens must be an integer or a (lo, hi) pair of integers, got {spec!r}.")
        if not 1 <= lo <= hi:
            raise ValueError(f"max_new_tokens needs 1 <= lo <= hi, got {spec!r}.")
        self.lo, self.hi = lo, hi

    @property
    def fixed(self) -> bool:
        return self.lo == self.hi

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` limits (n,) int64; a fixed sampler returns ``hi`` without touching ``rng``."""
        if self.fixed:
            return np.full(n, self.hi, dtype=np.int64)
        return rng.integers(self.lo, self.hi + 1, size=n).astype(np.int64)

    def __repr__(self) -> str:
        return f"LengthSampler({self.hi if self.fixed else (self.lo, self.hi)})"


def check_min_new_tokens(min_new_tokens: int, sampler: LengthSampler) -> int:
    """``min_new_tokens`` as an int in ``[0, lo]`` (an episode must be able to reach it before its limit)."""
    if isinstance(min_new_tokens, bool) or not isinstance(min_new_tokens, (int, np.integer)):
        raise ValueError(f"min_new_tokens must be an integer >= 0, got {min_new_tokens!r}.")
    if not 0 <= min_new_tokens <= sampler.lo:
        raise ValueError(f"min_new_tokens must be in [0, {sampler.lo}] (the smallest max_new_tokens), "
                         f"got {min_new_tokens}.")
    return int(min_new_tokens)


def eos_mask_rows(new_tokens: np.ndarray, min_new_tokens: int) -> np.ndarray:
    """(N,) bool: rows whose next action may NOT be EOS (fewer than ``min_new_tokens`` generated)."""
    return new_tokens < min_new_tokens


def action_mask(eos_blocked: np.ndarray, eos_token_ids: int | np.ndarray, vocab_size: int) -> np.ndarray:
    """(N, V) int8 action mask: 1 = allowed; 0 only at the EOS ids (one id or (E,)) in the ``eos_blocked`` (N,)
    rows."""
    mask = np.ones((eos_blocked.shape[0], vocab_size), dtype=np.int8)
    mask[np.ix_(np.flatnonzero(eos_blocked), np.atleast_1d(eos_token_ids))] = 0
    return mask
