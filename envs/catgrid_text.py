"""``CatGrid-Text-v0``: the cat's gridworld played by a language model, token by token, turn by turn.

:class:`CatGridTextEnv` / :class:`CatGridTextVectorEnv` are :class:`envs.turn_env.TurnTokenEnv` /
:class:`envs.turn_env.TurnTokenVectorEnv` over :class:`envs.catgrid_turns.CatGridTurnEnv` with CatGrid-sized
defaults; ``MultiTurn-v0`` (same module as the faces) wraps any TurnEnv factory.
"""

from __future__ import annotations

import functools
from typing import Any

from envs.catgrid_turns import CatGridTurnEnv
from envs.turn_env import TurnTokenEnv, TurnTokenVectorEnv

__all__ = ["CATGRID_TEXT_DEFAULTS", "CatGridTextEnv", "CatGridTextVectorEnv"]

_TURN_KEYS = ("desc", "map_name", "slip", "terminal", "max_turns", "invalid_penalty")
CATGRID_TEXT_DEFAULTS: dict[str, Any] = {"end_of_turn": ";", "env_suffix": ">", "max_turn_tokens": 4,
                                         "max_context": 256, "max_turns": 12}
"""Token-level defaults: each env text ends with ``>`` (the agent's prompt), the agent answers a move word and ``;``
(at most 4 tokens), and a 12-turn episode fits in 256 tokens: the transcript layout of
:func:`envs.transcripts.transcript_text` with ``end_of_turn=";", env_end=">"``, which has no whitespace at the turn
boundaries, so the SFT stage (which collapses whitespace, :func:`envs.imdb.clean_review`) trains on it unchanged."""


def _split(kwargs: dict[str, Any]) -> tuple[functools.partial, dict[str, Any]]:
    """``CatGridTurnEnv`` kwargs -> its factory; the rest are the token env's."""
    kwargs = CATGRID_TEXT_DEFAULTS | kwargs
    turn = {k: kwargs.pop(k) for k in _TURN_KEYS if k in kwargs}
    return functools.partial(CatGridTurnEnv, **turn), kwargs


class CatGridTextEnv(TurnTokenEnv):
    """CatGrid-v0 in words as a token env: :class:`envs.turn_env.TurnTokenEnv`'s spec over
    :class:`envs.catgrid_turns.CatGridTurnEnv` (whose docstring gives the texts, moves, rewards and the no-move
    penalty).

    Each env turn is ``"at x,y up U down D left L right R>"``; the agent's turn is a move word ended by ``";"``
    (or cut at ``max_turn_tokens=4`` tokens) and is scored by the cat's move: broom -1, bathtub -10 (ends), meat
    +100 (ends), a turn naming no move ``invalid_penalty`` (-1, the cat stays). Episodes are truncated after
    ``max_turns=12`` turns (CatGrid's time limit here; its exact undiscounted optimum under that limit is
    :meth:`optimal_start_return`, the target of γ = 1 training) or by ``max_context=256`` tokens.

    Arguments: ``desc``, ``map_name`` ("5x5"), ``slip`` (0.2), ``terminal``, ``max_turns`` (12),
    ``invalid_penalty`` (-1) as :class:`envs.catgrid_turns.CatGridTurnEnv`; the token env's arguments otherwise
    (``model`` and ``tokenizer`` required).
    """

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        env_fn, rest = _split(kwargs)
        super().__init__(render_mode=render_mode, env_fn=env_fn, **rest)

    def optimal_start_return(self) -> float:
        """The exact optimum of the undiscounted return from the start within ``max_turns`` turns."""
        env = self.core.envs[0]
        assert isinstance(env, CatGridTurnEnv)
        return env.optimal_start_return()


class CatGridTextVectorEnv(TurnTokenVectorEnv):
    """``num_envs`` rows of :class:`CatGridTextEnv` (its arguments), natively vectorised."""

    def __init__(self, num_envs: int, render_mode: str | None = None, **kwargs: Any) -> None:
        env_fn, rest = _split(kwargs)
        super().__init__(num_envs, render_mode=render_mode, env_fn=env_fn, **rest)

    def optimal_start_return(self) -> float:
        env = self.core.envs[0]
        assert isinstance(env, CatGridTurnEnv)
        return env.optimal_start_return()
