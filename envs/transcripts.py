"""Transcripts of legal play in a string-level turn env (:class:`envs.turns.TurnEnv`), for the SFT stage.

:func:`play_transcripts` plays whole episodes with a given player (``policy(env_text, info, rng) -> agent text``);
:func:`transcript_text` joins one episode into the single text the SFT stage trains on (``runners.sft`` reads
JSON lines ``{"text": ...}``, :func:`write_transcripts`): env text, agent turn, end-of-turn marker, and so on.
A tiny LM SFT'd on them learns the turn format (answer an env text with a legal turn) before RL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.turns import TurnEnv

TurnPolicy = Callable[[str, dict[str, Any], np.random.Generator], str]
"""A player: ``policy(env_text, info, rng) -> agent turn text`` (its randomness from ``rng``)."""


@dataclass(frozen=True)
class Transcript:
    """One played episode: the env texts (first one from ``reset``), the agent turns and their rewards."""

    env_texts: tuple[str, ...]  # (turns + 1,): reset text, then the text after each turn
    agent_texts: tuple[str, ...]  # (turns,)
    rewards: tuple[float, ...]  # (turns,)
    terminated: bool
    truncated: bool

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))


def play_transcripts(make_env: Callable[[], TurnEnv], policy: Callable[[TurnEnv], TurnPolicy], episodes: int,
                     seed: int = 0, max_turns: int = 1000) -> list[Transcript]:
    """``episodes`` whole episodes of ``policy(env)`` in one env from ``make_env()``, episode ``i`` reset with seed
    ``seed + i`` and the player's draws from ``np.random.default_rng(seed)``: the same arguments, the same
    transcripts. ``max_turns`` guards against an env that never ends (``RuntimeError``)."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be an int >= 1, got {episodes!r}")
    env, rng = make_env(), np.random.default_rng(seed)
    player, out = policy(env), []
    for i in range(episodes):
        text, info = env.reset(seed=seed + i)
        env_texts, agent_texts, rewards = [text], list[str](), list[float]()
        terminated = truncated = False
        while not (terminated or truncated):
            if len(agent_texts) >= max_turns:
                raise RuntimeError(f"episode {i} did not end within {max_turns} turns; raise max_turns or check "
                                   "that the env terminates or truncates")
            action = player(text, info, rng)
            text, reward, terminated, truncated, info = env.step(action)
            env_texts.append(text)
            agent_texts.append(action)
            rewards.append(float(reward))
        out.append(Transcript(tuple(env_texts), tuple(agent_texts), tuple(rewards), bool(terminated), bool(truncated)))
    return out


def transcript_text(t: Transcript, end_of_turn: str = "\n", env_end: str = " ", final_text: bool = False) -> str:
    """One episode as one training text: ``env_text + env_end + agent_text + end_of_turn`` per turn (the agent's
    turn ends with ``end_of_turn``, as the multi-turn token env ends it), optionally followed by the env's text after
    the last turn (``final_text``)."""
    parts = [f"{e}{env_end}{a}{end_of_turn}" for e, a in zip(t.env_texts, t.agent_texts)]
    return "".join(parts) + (t.env_texts[-1] if final_text else "")


def write_transcripts(path: str | os.PathLike, texts: Sequence[str]) -> Path:
    """Write ``texts`` as JSON lines ``{"text": ...}`` (what ``runners.sft --data`` reads), atomically."""
    if not texts:
        raise ValueError("no transcripts to write; play at least one episode")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps({"text": s}) + "\n" for s in texts))
    os.replace(tmp, out)  # never half written
    return out
