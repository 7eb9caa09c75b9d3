"""The batched engine of the multi-turn token envs: :class:`TurnTokenCore` plays ``N`` string-level turn envs.

Each row holds one :class:`envs.turns.TurnEnv` episode as a token transcript: the env's first text, then agent
turns (the agent's tokens, one per step, until an end-of-turn id or the per-turn cap) alternating with env turns
(the env's answer, tokenized and appended in the same step as the agent's last token). Per row the engine keeps the
transcript (host buffers), which of its positions are the agent's, and the frozen reference LM's hidden state at
the transcript's end; the reference's KV cache (:class:`envs.lm.append_cache.AppendLM`) continues across turns:
each step prefills only the tokens the step appended (the action, plus an env turn), for all rows in one batched
forward. The Gymnasium faces and the full spec are in :mod:`envs.turn_env`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from envs.lm import resolve_device
from envs.lm.append_cache import AppendLM, right_padded
from envs.prompt_rows import render_prompts
from envs.textgen_setup import reference_model
from envs.turns import TurnEnv

__all__ = ["TurnTokenCore", "end_of_turn_ids"]


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase, end_of_turn: str | int | Sequence[int] | None) -> list[int]:
    """The ids that end an agent turn: a string that is one token, an id, several ids, or None (the EOS id)."""
    if end_of_turn is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token: pass end_of_turn= (a one-token string or ids).")
        return [int(tokenizer.eos_token_id)]
    if isinstance(end_of_turn, str):
        ids = tokenizer(end_of_turn, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"end_of_turn={end_of_turn!r} is {len(ids)} tokens {ids}; pass a string that the "
                             "tokenizer reads as one token, or the ids themselves.")
        return [int(ids[0])]
    ids = [int(end_of_turn)] if isinstance(end_of_turn, (int, np.integer)) else [int(i) for i in end_of_turn]
    if not ids or min(ids) < 0 or max(ids) >= len(tokenizer):
        raise ValueError(f"end_of_turn ids must be token ids in [0, {len(tokenizer)}), got {ids}.")
    return ids


class TurnTokenCore:
    """``num_rows`` multi-turn episodes as token transcripts, with the per-step reference log-prob (KL shaping).

    Per step, an acting row appends its action and earns ``kl_coef·log π_ref(a|context)``; when the action ends
    the turn (an id of ``end_of_turn`` or the ``max_turn_tokens``-th token of the turn) the turn's text is played
    in the row's TurnEnv, whose reward is added to this step, and unless the episode ended the env's answer is
    tokenized and appended. A row whose next env turn would not fit in ``max_context`` tokens (with room for one
    agent token) or whose context is full mid-turn is truncated (``info["context_limit"]``).
    """

    def __init__(
        self, num_rows: int, env_fn: Callable[[], TurnEnv], model: str | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | str | None = None, max_turn_tokens: int = 8,
        end_of_turn: str | int | Sequence[int] | None = None, max_context: int = 256, kl_coef: float = 0.05,
        device: str | torch.device = "auto", env_suffix: str = "", chat_template: bool = False,
    ) -> None:
        if num_rows < 1 or max_turn_tokens < 1 or max_context < 2:
            raise ValueError(f"num_envs, max_turn_tokens must be >= 1 and max_context >= 2; got {num_rows}, "
                             f"{max_turn_tokens}, {max_context}.")
        if not callable(env_fn):
            raise TypeError(f"env_fn must be a zero-argument callable returning a TurnEnv, got {env_fn!r}.")
        self.device = resolve_device(device)
        if isinstance(model, PreTrainedModel) and tokenizer is None:
            raise ValueError("a model object needs its tokenizer: pass tokenizer=.")
        ref, tokenizer = reference_model(model, tokenizer, None, self.device)  # a frozen copy (peft: adapter off)
        self.tokenizer, self.ref_model = tokenizer, ref
        self.num_rows, self.max_turn_tokens, self.max_context = num_rows, max_turn_tokens, max_context
        self.kl_coef, self.env_suffix, self.chat_template = float(kl_coef), str(env_suffix), bool(chat_template)
        if self.chat_template and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("chat_template=True needs a tokenizer with a chat template (tokenizer.chat_template, a "
                             "Jinja string); or pass chat_template=False for plain env texts.")
        self.eot_ids = end_of_turn_ids(tokenizer, end_of_turn)
        self.vocab_size = int(ref.get_output_embeddings().weight.shape[0])
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eot_ids[0])
        self.envs = [env_fn() for _ in range(num_rows)]
        L = max_context
        self.observation_space = spaces.Dict(
            input_ids=spaces.Box(0, self.vocab_size - 1, (L,), np.int64),
            attention_mask=spaces.Box(0, 1, (L,), np.int64), agent_mask=spaces.Box(0, 1, (L,), np.int64))
        self.action_space = spaces.Discrete(self.vocab_size)
        self.ref_lm = AppendLM(self.ref_model, num_rows, max_len=L, reference=True)
        self.tokens = np.zeros((num_rows, L), dtype=np.int64)  # transcripts, left aligned
        self.agent = np.zeros((num_rows, L), dtype=bool)  # positions holding the agent's tokens
        self.lengths = np.zeros(num_rows, dtype=np.int64)
        self.turn_len = np.zeros(num_rows, dtype=np.int64)  # agent tokens in the running turn
        self.turns = np.zeros(num_rows, dtype=np.int64)  # finished agent turns of the episode
        self._ref_hidden: torch.Tensor | None = None  # (N, D) reference state at each transcript's end

    def encode(self, text: str) -> list[int]:
        """The token ids of an env text (with ``chat_template``: as a user message plus the generation prompt)
        followed by ``env_suffix`` (no special tokens added)."""
        if not isinstance(text, str):
            raise TypeError(f"a TurnEnv must return str texts, got {type(text).__name__}: {text!r}")
        if self.chat_template:  # one user message + the generation prompt (the assistant header is env tokens)
            text = render_prompts([{"text": text}], "text", self.tokenizer, chat_template=True)[0]
        return [int(i) for i in self.tokenizer(text + self.env_suffix, add_special_tokens=False)["input_ids"]]

    def _put(self, row: int, ids: list[int], agent: bool) -> None:
        n = int(self.lengths[row])
        self.tokens[row, n : n + len(ids)] = ids
        self.agent[row, n : n + len(ids)] = agent
        self.lengths[row] = n + len(ids)

    def start(self, rows: Sequence[int], seeds: Sequence[int | None]) -> dict[int, list[int]]:
        """New episodes in ``rows`` (TurnEnv ``reset(seed=...)``) -> each row's first tokens (to prefill)."""
        chunks = {}
        for row, seed in zip(rows, seeds):
            text, _ = self.envs[row].reset(seed=seed)
            ids = self.encode(text)[-(self.max_context - 1) :]  # keep room for one agent token
            if not ids:
                raise ValueError("a TurnEnv's first text must give at least one token.")
            self.lengths[row] = self.turn_len[row] = self.turns[row] = 0
            self.agent[row] = False
            self._put(row, ids, False)
            chunks[int(row)] = ids
        return chunks

    def prefill(self, chunks: dict[int, list[int]], restart: set[int]) -> None:
        """Extend the reference's cache of each row by its new tokens, all rows in one batched forward."""
        if not chunks:
            return
        rows = np.array(sorted(chunks), dtype=np.int64)
        ids, counts = right_padded([np.asarray(chunks[r]) for r in rows])
        hidden = self.ref_lm.extend(rows, ids, counts, np.array([r in restart for r in rows]))
        if self._ref_hidden is None:
            self._ref_hidden = torch.zeros(self.num_rows, hidden.shape[1], device=self.device)
        self._ref_hidden[torch.as_tensor(rows, device=self.device)] = hidden

    def ref_logprobs(self, actions: np.ndarray) -> np.ndarray:
        """(N,) float64 log π_ref(a_n | row n's transcript) (rows never started: 0)."""
        if self._ref_hidden is None:
            return np.zeros(self.num_rows)
        with torch.no_grad(), self.ref_lm.autocast():
            logits = self.ref_lm.head(self._ref_hidden).float()  # (N, V)
        a = torch.as_tensor(actions, device=self.device)
        return F.log_softmax(logits, -1).gather(1, a[:, None])[:, 0].double().cpu().numpy()

    def step(self, actions: np.ndarray, restart: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Restart the rows in ``restart`` (reward 0); the others play ``actions`` -> rewards, terminated,
        truncated (N,) and the vector info."""
        N = self.num_rows
        rewards, term, trunc = np.zeros(N), np.zeros(N, dtype=bool), np.zeros(N, dtype=bool)
        turn_end, limit = np.zeros(N, dtype=bool), np.zeros(N, dtype=bool)
        acting = ~restart
        ref = self.ref_logprobs(actions)
        rewards[acting] = self.kl_coef * ref[acting]
        chunks = self.start(np.flatnonzero(restart).tolist(), [None] * int(restart.sum()))
        texts = np.full(N, None, dtype=object)
        for row in np.flatnonzero(acting):
            r, te, tr, ended, lim, new = self._act(int(row), int(actions[row]))
            rewards[row] += r
            term[row], trunc[row], turn_end[row], limit[row] = te, tr, ended, lim
            if te or tr:
                texts[row] = self._decode(self.tokens[row, : self.lengths[row]].tolist())
            else:
                chunks[int(row)] = new
        self.prefill(chunks, set(np.flatnonzero(restart).tolist()))
        info = {"ref_logprob": np.where(acting, ref, 0.0), "_ref_logprob": acting.copy(),
                "turn_end": turn_end, "_turn_end": acting.copy(),
                "context_limit": limit, "_context_limit": limit.copy(),
                "text": texts, "_text": term | trunc}
        return rewards, term, trunc, info

    def _act(self, row: int, action: int) -> tuple[float, bool, bool, bool, bool, list[int]]:
        """Append ``action`` to ``row``; play its turn when it ends -> (reward, terminated, truncated, turn ended,
        context limit hit, tokens appended)."""
        self._put(row, [action], True)
        self.turn_len[row] += 1
        new = [action]
        if action not in self.eot_ids and self.turn_len[row] < self.max_turn_tokens:
            full = self.lengths[row] >= self.max_context
            return 0.0, False, bool(full), False, bool(full), new
        n, k = int(self.lengths[row]), int(self.turn_len[row])
        turn = [t for t in self.tokens[row, n - k : n].tolist() if t not in self.eot_ids]
        text, reward, te, tr, _ = self.envs[row].step(self._decode(turn))
        self.turn_len[row] = 0
        self.turns[row] += 1
        if te or tr:
            return float(reward), bool(te), bool(tr), True, False, new
        ids = self.encode(text)
        if n + len(ids) + 1 > self.max_context:  # the env's answer and one agent token would not fit
            return float(reward), False, True, True, True, new
        self._put(row, ids, False)
        return float(reward), False, False, True, False, new + ids

    def observation(self, rows: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """The transcripts LEFT padded to ``max_context``: input_ids, attention_mask, agent_mask, (R, L) int64."""
        idx = np.arange(self.num_rows) if rows is None else np.asarray(rows)
        L = self.max_context
        src = np.arange(L)[None, :] - (L - self.lengths[idx])[:, None]  # (R, L) transcript position per column
        real = src >= 0
        src = np.clip(src, 0, L - 1)
        ids = np.where(real, np.take_along_axis(self.tokens[idx], src, 1), self.pad_id)
        agent = real & np.take_along_axis(self.agent[idx], src, 1)
        return {"input_ids": ids.astype(np.int64), "attention_mask": real.astype(np.int64),
                "agent_mask": agent.astype(np.int64)}

    def texts(self) -> list[str]:
        """Every row's transcript as text."""
        return [self._decode(self.tokens[r, : self.lengths[r]].tolist()) for r in range(self.num_rows)]

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids))
