"""A tiny string-level turn env, a tokenizer and a random GPT-2 for the multi-turn token env tests (built once
per process: the tokenizer trains in well under a second)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from envs.catgrid_turns import CatGridTurnEnv, catgrid_move_policy
from envs.transcripts import play_transcripts, transcript_text
from runners.common.tiny_lm import make_tiny_lm, train_tokenizer

EOT = "\n"


class GuessDigit:
    """Guess a digit 0-3 in at most 3 turns: reward 1 and the end when a turn names it, else a hint (of varying
    length). Randomness from ``reset(seed=...)``."""

    def __init__(self, max_turns: int = 3) -> None:
        self.max_turns = max_turns
        self.rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.secret, self.turn = int(self.rng.integers(4)), 0
        return "guess a digit" + " please" * int(self.rng.integers(3)) + EOT, {}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self.turn += 1
        won = str(self.secret) in action
        hint = ("higher" if all(str(d) not in action for d in range(self.secret, 4)) else "lower") + EOT
        return "yes" if won else hint * (1 + self.turn % 2), float(won), won, self.turn >= self.max_turns, {}


@functools.lru_cache(maxsize=1)
def tokenizer() -> Any:
    texts = ["guess a digit please please\n0 1 2 3 higher\nlower\nyes\n"] * 4 + [f"{d}\n" for d in range(4)] * 4
    return train_tokenizer(texts, vocab_size=300, min_frequency=1)


@functools.lru_cache(maxsize=4)
def tiny_lm(seed: int = 0) -> Any:
    return make_tiny_lm(tokenizer(), seed=seed, n_layer=2, n_head=2, n_embd=32, n_positions=128).eval()


def env_kwargs(**kw: Any) -> dict[str, Any]:
    """Keyword arguments of ``TurnTokenEnv`` / ``TurnTokenVectorEnv`` over :class:`GuessDigit`."""
    return {"env_fn": GuessDigit, "model": tiny_lm(), "tokenizer": tokenizer(), "max_turn_tokens": 3,
            "end_of_turn": EOT, "max_context": 64, "kl_coef": 0.1, "device": "cpu"} | kw


@functools.lru_cache(maxsize=1)
def catgrid_texts() -> tuple[str, ...]:
    """Transcripts of random legal CatGrid-Text play (12 turns at most), laid out as the token env lays them."""
    played = play_transcripts(lambda: CatGridTurnEnv(max_turns=12), lambda e: catgrid_move_policy(e), 60, seed=0)
    return tuple(transcript_text(t, ";", ">") for t in played)


@functools.lru_cache(maxsize=1)
def catgrid_lm() -> tuple[Any, Any]:
    """A tokenizer trained on :func:`catgrid_texts` and a random tiny GPT-2 of 256 positions over it."""
    tok = train_tokenizer(list(catgrid_texts()), vocab_size=400, min_frequency=2)
    return make_tiny_lm(tok, seed=0, n_layer=1, n_head=2, n_embd=32, n_positions=256).eval(), tok
