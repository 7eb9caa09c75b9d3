"""The string-level turn env protocol: one episode at a time, text in and text out (GEM's API).

``reset(seed=...) -> (first env text, info)``; ``step(agent turn text) -> (next env text, reward for that turn,
terminated, truncated, info)``. GEM's envs (``gem.make("game:GuessTheNumber-v0-easy")``) and
:class:`envs.catgrid_turns.CatGridTurnEnv` follow it; the token-level multi-turn core wraps any factory of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TurnEnv(Protocol):
    """A turn-based text env: the agent's turn is a string, the env answers with a string and a reward."""

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode (seeded when ``seed`` is given); returns the first env text and an info dict."""
        ...

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Play the agent's turn ``action``; returns the next env text, the turn's reward, terminated, truncated and
        info."""
        ...


TurnEnvFactory = Callable[[], TurnEnv]
"""A zero-argument callable returning a fresh :class:`TurnEnv` (one per vectorised row)."""
