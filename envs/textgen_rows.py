"""The host side of :class:`envs.textgen_core.TextGenCore`: the rows' token buffers and their episode starts.

:class:`TextRows` holds the (N, L) left-padded token buffers and the per-row counters, and starts episodes: a
random prompt (shared by the e-th episode of every row of a group when ``group_size > 1``) and this episode's
length limit. Pure numpy; the reference model, the rewards and the info live in the core.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.length import LengthSampler


class TextRows:
    """Token buffers of ``num_rows`` rows and the start of each row's episode (a mixin of ``TextGenCore``, which
    sets the sizes and the prompt table declared here)."""

    num_rows: int
    seq_len: int  # L
    pad_token_id: int
    eos_token_id: int
    eos_token_ids: np.ndarray  # (E,) int64: every id that ends an episode
    max_new_tokens: int
    prompt_min_len: int
    prompt_max_len: int
    group_size: int
    length_sampler: LengthSampler
    prompt_table: np.ndarray  # (M, P) int64 first tokens of every usable review, right padded
    prompt_lengths: np.ndarray  # (M,) int64

    def _allocate_buffers(self) -> None:
        """The (N, L) token buffer (all padding), the per-row counters and the prompt-group bookkeeping."""
        n = self.num_rows
        self.input_ids = np.full((n, self.seq_len), self.pad_token_id, dtype=np.int64)  # (N, L) left pad
        self.lengths = np.zeros(n, dtype=np.int64)  # real tokens per row
        self.prompt_len = np.zeros(n, dtype=np.int64)
        self.new_tokens = np.zeros(n, dtype=np.int64)
        self.episode_max = np.full(n, self.max_new_tokens, dtype=np.int64)  # this episode's limit
        self._group_len: dict[int, int] = {}  # group id -> its episodes' limit (group_size > 1, sampled lengths)
        self.group_id = np.zeros(n, dtype=np.int64)  # id of the prompt group of each row's episode
        self.prompt_row = np.zeros(n, dtype=np.int64)  # index into the prompt table of each row's prompt
        self._episode = np.zeros(n, dtype=np.int64)  # episodes started per row since reset
        self._group_prompts: dict[tuple[int, int], list[int]] = {}  # (group, episode) -> [pick, k, id, rows left]
        self._next_group_id = 0

    @property
    def attention_mask(self) -> np.ndarray:
        """(N, L) int64: 1 on the real (rightmost) tokens of each row."""
        return (np.arange(self.seq_len) >= self.seq_len - self.lengths[:, None]).astype(np.int64)

    def _draw_prompts(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random prompts: review indices (n,) and lengths k ~ U[prompt_min_len, prompt_max_len] (n,)."""
        pick = rng.integers(len(self.prompt_table), size=n)
        k = np.minimum(rng.integers(self.prompt_min_len, self.prompt_max_len + 1, size=n), self.prompt_lengths[pick])
        return pick, k

    def _group_prompts_for(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Prompts of the next episode of ``rows``: the e-th episode of every row of a group shares one prompt.

        The prompt of (group, e) is drawn when the first row of the group starts its e-th episode and
        forgotten when the last one has; ``group_id`` gets one new id per (group, e).
        """
        pick, k = np.empty(rows.size, dtype=np.int64), np.empty(rows.size, dtype=np.int64)
        for j, r in enumerate(rows):
            key = (int(r) // self.group_size, int(self._episode[r]))
            if key not in self._group_prompts:
                p, n = self._draw_prompts(1, rng)
                self._group_prompts[key] = [int(p[0]), int(n[0]), self._next_group_id, self.group_size]
                self._next_group_id += 1
            entry = self._group_prompts[key]
            pick[j], k[j], self.group_id[r] = entry[0], entry[1], entry[2]
            entry[3] -= 1
            if entry[3] == 0:
                del self._group_prompts[key]
        return pick, k

    def _start(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        """New prompts in ``rows`` (indices): a random review's first k tokens, left padded (shared by the
        rows of a group when ``group_size > 1``)."""
        if self.group_size == 1:
            pick, k = self._draw_prompts(rows.size, rng)
            self.group_id[rows] = self._next_group_id + np.arange(rows.size)
            self._next_group_id += rows.size
        else:
            pick, k = self._group_prompts_for(rows, rng)
        self._episode[rows] += 1
        self.prompt_row[rows] = pick
        self._draw_lengths(rows, rng)
        src = np.arange(self.seq_len) - (self.seq_len - k)[:, None]  # (R, L) index into the prompt
        prompts = np.take_along_axis(self.prompt_table[pick], np.clip(src, 0, self.prompt_max_len - 1), axis=1)
        self.input_ids[rows] = np.where(src >= 0, prompts, self.pad_token_id)
        self.lengths[rows] = self.prompt_len[rows] = k
        self.new_tokens[rows] = 0

    def _draw_lengths(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        """This episode's ``max_new_tokens`` for ``rows`` (shared by a group's rows, like the prompt)."""
        if self.length_sampler.fixed or self.group_size == 1:
            self.episode_max[rows] = self.length_sampler.sample(rng, rows.size)
            return
        for r in rows:
            gid = int(self.group_id[r])
            if gid not in self._group_len:
                self._group_len[gid] = int(self.length_sampler.sample(rng, 1)[0])
            self.episode_max[r] = self._group_len[gid]
        live = set(self.group_id.tolist())
        self._group_len = {g: n for g, n in self._group_len.items() if g in live}

    _BUFFERS: tuple[str, ...] = (
        "input_ids", "lengths", "prompt_len", "new_tokens", "episode_max", "group_id", "_episode")

    def _buffers(self) -> dict[str, Any]:
        """Copies of everything a step changes (besides the reference cache and the rng)."""
        return {**{k: getattr(self, k).copy() for k in self._BUFFERS},
                "group_prompts": {key: list(v) for key, v in self._group_prompts.items()},
                "group_len": dict(self._group_len), "next_group_id": self._next_group_id}

    def _set_buffers(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_buffers` (checked against this env's shapes)."""
        for k in self._BUFFERS:
            value = np.asarray(state[k], dtype=np.int64).copy()
            if value.shape != getattr(self, k).shape:
                raise ValueError(f"saved {k} has shape {value.shape}, this env's is {getattr(self, k).shape}")
            setattr(self, k, value)
        self._group_prompts = {tuple(key): list(v) for key, v in state["group_prompts"].items()}
        self._group_len = {int(g): int(n) for g, n in state["group_len"].items()}
        self._next_group_id = int(state["next_group_id"])

    def _advance_rows(
        self, actions: np.ndarray, active: np.ndarray, restart: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Append the actions to the active rows, start new prompts in the restarting ones; returns
        ``(terminated, ended_eos)``, (N,) bool each."""
        shift = np.flatnonzero(active)
        self.input_ids[shift, :-1] = self.input_ids[shift, 1:]
        self.input_ids[shift, -1] = actions[shift]
        self.lengths[shift] += 1
        self.new_tokens[shift] += 1
        if restart.any():
            self._start(np.flatnonzero(restart), rng)
        ended_eos = active & np.isin(actions, self.eos_token_ids)
        terminated = ended_eos | (active & (self.new_tokens >= self.episode_max))
        return terminated, ended_eos
