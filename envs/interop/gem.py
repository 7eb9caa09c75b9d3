"""GEM's turn envs (``pip install 'rlhf-gym[multiturn]'``, the ``gem-llm`` package) shortened for a tiny LM.

GEM's envs follow the string-level protocol :class:`envs.turns.TurnEnv` already; their texts are written for
large instruction-tuned models. :class:`ShortGuessTheNumber` wraps GEM's ``GuessTheNumber`` (e.g.
``game:GuessTheNumber-v0-easy``: a number in 1-10, 4 turns) with a one-line prompt, a few words per hint and a
plain-number answer, and seeds every episode from its own generator; :func:`guess_policy` plays it legally for SFT
transcripts (:mod:`envs.transcripts`). This module imports ``gem`` only in :func:`make_guess_the_number`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from envs.turns import TurnEnv

_BOXED = re.compile(r"\\boxed\{(\d+)\}")
_NUMBER = re.compile(r"(?<![\d.])\d+(?![\d.])")
_HINTS = (  # (GEM's text, the short text); the first match wins
    (re.compile(r"you guessed (\d+), and the target number is (higher|lower) than \d+"), r"\2 than \1"),
    (re.compile(r"you guessed (\d+), which is outside the range"), r"\1 is out of range"),
    (re.compile(r"you guessed (\d+), which has been already guessed"), r"\1 again"),
    (re.compile(r"Congratulations! You guessed the correct number (\d+)"), r"\1 is right"),
    (re.compile(r"you did not provide a valid guess"), "no number"),
    (re.compile(r"You have reached the maximum number of turns"), "no turns left"),
)


def extract_guess(text: str) -> str:
    """The agent's turn as GEM reads it: ``\\boxed{n}`` (the last one, GEM's own rule) or, if there is none, the
    first whole number in the text, as ``\\boxed{n}``; a turn with no number is passed on unchanged (GEM then
    scores it as a format error)."""
    if not isinstance(text, str):
        raise TypeError(f"a turn must be a str (the agent's text), got {type(text).__name__}: {text!r}")
    if _BOXED.search(text):
        return text
    found = _NUMBER.search(text)
    return text if found is None else "\\boxed{" + str(int(found.group(0))) + "}"


def short_hint(text: str) -> str:
    """GEM's GuessTheNumber feedback in a few words (``"higher than 5"``, ``"7 is right"``, ``"3 again"``,
    ``"12 is out of range"``, ``"no number"``, ``"no turns left"``); an unknown text is returned unchanged."""
    for pattern, short in _HINTS:
        found = pattern.search(text)
        if found is not None:
            return found.expand(short)
    return text


class ShortGuessTheNumber:
    """GEM's GuessTheNumber with texts a tiny LM can read: a :class:`envs.turns.TurnEnv` over a GEM env.

    ## Description
    The game, rewards and episode ends are GEM's (``env``, e.g. ``gem.make("game:GuessTheNumber-v0-easy")``):
    guess a secret integer in ``[min_number, max_number]`` within ``max_turns`` turns, with a hint after each
    guess. Only the texts change, in both directions.

    ## Action (the agent's turn)
    A ``str``; :func:`extract_guess` turns its first number into GEM's ``\\boxed{n}`` (``"7"``, ``" 7 "``,
    ``"my guess is 7"``; a ``\\boxed{n}`` is kept as it is). A turn without a number goes to GEM unchanged.

    ## Observation (the env's text)
    On reset ``"guess 1-10:"`` (GEM's range) instead of GEM's 600-character instructions; after each turn GEM's
    feedback shortened by :func:`short_hint`, e.g. ``"higher than 5"`` or ``"7 is right"``.

    ## Rewards (GEM's, for -v0-easy)
    1 for the right number (the episode terminates); 0 for any other guess, an out-of-range or repeated one
    included; -0.1 for a turn with no number (terminates); on the last turn without success
    ``1 - |guess - target| / (max_number - min_number)`` (terminated and truncated both true).

    ## Episode End, Information
    GEM's flags; ``info`` is GEM's (``{"suffix": ...}``) plus ``"target"`` (the secret number, for tests and
    analysis; a policy must not read it).

    ## Seeding
    ``reset(seed=s)`` reseeds ``self.np_random``; every reset draws the GEM episode's seed from it, so episodes
    are reproducible whatever else uses Python's ``random``. GEM's ``reset(seed=...)`` reseeds the global
    ``random`` and ``numpy.random`` state (its own behaviour, unchanged here).

    ## Arguments
    ``ShortGuessTheNumber(env)``: a GEM GuessTheNumber env (see :func:`make_guess_the_number`).
    """

    def __init__(self, env: Any) -> None:
        inner = getattr(env, "unwrapped", env)
        if not all(hasattr(inner, k) for k in ("min_number", "max_number", "max_turns", "reset", "step")):
            raise TypeError(f"ShortGuessTheNumber wraps GEM's GuessTheNumber env (gem.make('game:GuessTheNumber-"
                            f"v0-easy')), got {type(env).__name__}")
        self.env, self.inner = env, inner
        self.np_random, _ = seeding.np_random(None)
        self.guessed: list[int] = []
        self.low, self.high = int(inner.min_number), int(inner.max_number)

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        _, info = self.env.reset(seed=int(self.np_random.integers(2**31 - 1)))
        self.low, self.high, self.guessed = int(self.inner.min_number), int(self.inner.max_number), []
        return f"guess {self.low}-{self.high}:", dict(info) | {"target": int(self.inner.game_number)}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        boxed = extract_guess(action)
        text, reward, terminated, truncated, info = self.env.step(boxed)
        found = _BOXED.findall(boxed)
        if found:
            self._narrow(int(found[-1]))
        return short_hint(text), float(reward), bool(terminated), bool(truncated), \
            dict(info) | {"target": int(self.inner.game_number)}

    def _narrow(self, guess: int) -> None:
        """Keep ``[low, high]``, the numbers the hints so far allow (what a legal, informed player may use)."""
        self.guessed.append(guess)
        target = int(self.inner.game_number)  # only to read the hint GEM just gave: higher or lower
        if self.low <= guess <= self.high and guess != target:
            self.low, self.high = (guess + 1, self.high) if target > guess else (self.low, guess - 1)

    @property
    def candidates(self) -> list[int]:
        """The numbers the hints so far allow and not yet guessed."""
        return [n for n in range(self.low, self.high + 1) if n not in self.guessed]


def make_guess_the_number(env_id: str = "game:GuessTheNumber-v0-easy") -> ShortGuessTheNumber:
    """``ShortGuessTheNumber(gem.make(env_id))``; needs ``pip install 'rlhf-gym[multiturn]'`` (gem-llm)."""
    try:
        import gem
    except ImportError:
        raise ImportError("GEM's envs need the gem-llm package: pip install 'rlhf-gym[multiturn]'") from None
    return ShortGuessTheNumber(gem.make(env_id))


def guess_policy(env: TurnEnv, informed_prob: float = 1.0) -> Callable[[str, dict[str, Any], np.random.Generator], str]:
    """A legal player of a :class:`ShortGuessTheNumber` for SFT transcripts: each turn a number never guessed
    before, with probability ``informed_prob`` uniformly among those the hints allow, else among the whole range.
    ``policy(text, info, rng) -> "7"`` (the bare number)."""
    if not isinstance(env, ShortGuessTheNumber):
        raise TypeError(f"guess_policy plays a ShortGuessTheNumber, got {type(env).__name__}")
    if not 0.0 <= informed_prob <= 1.0:
        raise ValueError(f"informed_prob must be in [0, 1], got {informed_prob!r}")

    def policy(text: str, info: dict[str, Any], rng: np.random.Generator) -> str:
        lo, hi = int(env.inner.min_number), int(env.inner.max_number)
        pool = env.candidates if rng.random() < informed_prob else [n for n in range(lo, hi + 1)
                                                                    if n not in env.guessed]
        return str(pool[int(rng.integers(len(pool)))])

    return policy
