"""The CatGrid-v0 MDP as a string-level turn env (:class:`envs.turns.TurnEnv`): the cat's gridworld in words.

:class:`CatGridTurnEnv` plays a :class:`envs.catgrid.CatGridEnv` (same maps, slips, rewards, random draws) and
renders each state as one short line of text; the agent answers with a move word. :func:`turn_table` is the turn
MDP's explicit table (CatGrid's four moves plus the no-move turn), so its exact optimum is checkable against
CatGrid's; :func:`catgrid_move_policy` plays legal (random or near-optimal) turns for SFT transcripts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from envs.catgrid import CatGridEnv
from envs.catgrid_optimum import finite_horizon_values, value_iteration
from envs.catgrid_tables import MOVES, GridTables, TransitionTable, build_transition_table

MOVE_WORDS = ("up", "down", "left", "right")
"""The move words in CatGrid's action order (0 = up, 1 = down, 2 = left, 3 = right)."""
NO_MOVE = len(MOVE_WORDS)
"""The action index of a turn that names no move (``info["move"]``), column 4 of :func:`turn_table`."""
WALL = "#"
_MOVE_RE = re.compile(r"(?<![a-z])(up|down|left|right)(?![a-z])", re.IGNORECASE)


def parse_move(text: str) -> int:
    """The move a turn names: the first of ``up``/``down``/``left``/``right`` (any case) standing as a word of its
    own (``"Up."``, ``"I go left"``, ``"\\boxed{right}"`` count; ``"upper"``, ``"uphill"`` do not), else
    :data:`NO_MOVE`."""
    if not isinstance(text, str):
        raise TypeError(f"a turn must be a str (the agent's text), got {type(text).__name__}: {text!r}")
    found = _MOVE_RE.search(text)
    return NO_MOVE if found is None else MOVE_WORDS.index(found.group(1).lower())


def describe(t: GridTables, state: int) -> str:
    """The env text of ``state``: ``"at x,y up U down D left L right R"`` with the neighbours' map letters
    (``C . B T M``) and ``#`` for the outer wall, e.g. ``"at 0,0 up # down . left # right ."``."""
    x, y = (int(v) for v in t.xy[state])
    sides = []
    for word, (dx, dy) in zip(MOVE_WORDS, MOVES.tolist()):
        nx, ny = x + dx, y + dy
        inside = 0 <= nx < t.width and 0 <= ny < t.height
        sides.append(f"{word} {t.desc[ny][nx] if inside else WALL}")
    return f"at {x},{y} " + " ".join(sides)


def turn_table(t: GridTables, invalid_penalty: float) -> TransitionTable:
    """``P[s][a]`` of the turn MDP: CatGrid's table for the four moves plus action :data:`NO_MOVE` (a turn naming no
    move): the cat stays with reward ``invalid_penalty`` (absorbing, reward 0, in a terminal state)."""
    P = build_transition_table(t)
    for s in range(t.n_states):
        P[s][NO_MOVE] = [(1.0, s, 0.0, True)] if t.done[s] else [(1.0, s, float(invalid_penalty), False)]
    return P


class CatGridTurnEnv:
    """CatGrid-v0 played in words: one short line of text per turn, a move word back.

    ## Description
    The MDP is exactly CatGrid-v0's (:class:`envs.catgrid.CatGridEnv`, which this env plays inside): same maps,
    slip, rewards and time limit, and the same random draws, so with the same seed and the same moves both envs
    give the same trajectory. It follows the string-level protocol :class:`envs.turns.TurnEnv` (GEM's API).

    ## Action (the agent's turn)
    A ``str``. The move is the first of ``up``, ``down``, ``left``, ``right`` (any case) that stands as a word of
    its own (:func:`parse_move`: ``"Up."``, ``"go left"``, ``"\\boxed{right}"`` work; ``"upper"`` does not). A turn
    naming no move leaves the cat where it is, with reward ``invalid_penalty`` (default -1) and no slip draw; it
    counts towards the time limit. A non-``str`` action raises ``TypeError``.

    ## Observation (the env's text)
    ``"at x,y up U down D left L right R"``: the cat's position (x to the right, y down, row 0 on top) and the map
    letter of each neighbour (``C`` start, ``.`` floor, ``B`` broom, ``T`` bathtub, ``M`` meat, ``#`` outer wall),
    e.g. ``"at 0,0 up # down . left # right ."`` (:func:`describe`). The same text on the last turn.

    ## Starting State
    The ``C`` cell.

    ## Rewards
    Per turn, CatGrid's: the cell the cat lands on (also when it slips or bumps a wall): floor and start 0,
    broom -1, bathtub -10, meat +100; a turn naming no move: ``invalid_penalty``.

    ## Episode End
    - Terminated: the cat lands on a cell in ``terminal`` (default meat and bathtub).
    - Truncated: after ``max_turns`` turns (default 50, CatGrid-v0's ``TimeLimit``; both flags can be true).
    Stepping an ended episode raises ``RuntimeError`` (call ``reset``).

    ## Information
    ``{"prob", "cell"}`` as CatGrid-v0's (transition probability, ``CELL_LETTERS`` code of the cat's cell), plus
    ``"move"``: the parsed move (0-3, or 4 = :data:`NO_MOVE`; -1 on reset) and ``"turn"``: turns played.

    ## Arguments
    ``CatGridTurnEnv(desc=None, map_name="5x5", slip=0.2, terminal="MT", max_turns=50, invalid_penalty=-1.0)``:
    the first four as ``gym.make("CatGrid-v0", ...)``. ``invalid_penalty`` must be <= 0, so that the optimum is
    CatGrid's (:func:`turn_table`, :meth:`optimal_start_return`). Randomness: ``reset(seed=...)`` seeds
    ``self.np_random`` (that of the inner CatGrid env).
    """

    def __init__(self, desc: Sequence[str] | None = None, map_name: str = "5x5", slip: float = 0.2,
                 terminal: str = "MT", max_turns: int = 50, invalid_penalty: float = -1.0) -> None:
        if isinstance(max_turns, bool) or not isinstance(max_turns, (int, np.integer)) or max_turns < 1:
            raise ValueError(f"max_turns must be an int >= 1 (CatGrid-v0's time limit is 50), got {max_turns!r}")
        if isinstance(invalid_penalty, bool) or not isinstance(invalid_penalty, (int, float, np.floating)) \
                or not float(invalid_penalty) <= 0.0:
            raise ValueError(f"invalid_penalty must be a number <= 0 (a turn naming no move must not pay), "
                             f"got {invalid_penalty!r}")
        self.grid = CatGridEnv(desc=desc, map_name=map_name, slip=slip, terminal=terminal)
        self.tables = self.grid.tables
        self.max_turns, self.invalid_penalty = int(max_turns), float(invalid_penalty)
        self.turns, self.ended = 0, False

    @property
    def np_random(self) -> np.random.Generator:
        """The generator of every random draw (the slips): the inner CatGrid env's, seeded by ``reset(seed=...)``."""
        return self.grid.np_random

    @property
    def state(self) -> int:
        """The cat's state index ``y * width + x``."""
        return int(self.grid.s)

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        _, info = self.grid.reset(seed=seed)
        self.turns, self.ended = 0, False
        return describe(self.tables, self.state), info | {"move": -1, "turn": 0}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.ended:
            raise RuntimeError("the episode has ended (terminated or truncated); call reset() before step()")
        move = parse_move(action)
        if move == NO_MOVE:
            reward, terminated = self.invalid_penalty, False
            info = {"prob": 1.0, "cell": int(self.tables.code[self.state])}
        else:
            _, reward, terminated, _, info = self.grid.step(move)
        self.turns += 1
        truncated = self.turns >= self.max_turns
        self.ended = terminated or truncated
        return describe(self.tables, self.state), float(reward), terminated, truncated, \
            info | {"move": move, "turn": self.turns}

    def transition_table(self) -> TransitionTable:
        """The turn MDP's ``P[s][a]`` for ``a`` in 0-4 (:func:`turn_table`)."""
        return turn_table(self.tables, self.invalid_penalty)

    def optimal_start_return(self, horizon: int | None = None) -> float:
        """The exact optimum of the undiscounted return from the start within ``horizon`` turns (default
        ``max_turns``), over the five-action turn MDP: CatGrid's :func:`envs.catgrid_optimum.optimal_start_return`."""
        h = self.max_turns if horizon is None else horizon
        return float(finite_horizon_values(self.transition_table(), h)[self.tables.start])


def catgrid_move_policy(env: CatGridTurnEnv, optimal_prob: float = 0.0,
                        gamma: float = 0.99) -> Callable[[str, dict[str, Any], np.random.Generator], str]:
    """A legal player of ``env`` for SFT transcripts: each turn, with probability ``optimal_prob`` the move of
    CatGrid's discounted optimum (value iteration at ``gamma``), else a uniformly random move word.
    Reads the cat's state from ``env``; ``policy(text, info, rng) -> move word``."""
    if not 0.0 <= optimal_prob <= 1.0:
        raise ValueError(f"optimal_prob must be in [0, 1], got {optimal_prob!r}")
    greedy = value_iteration(build_transition_table(env.tables), gamma)[1]  # (S,)

    def policy(text: str, info: dict[str, Any], rng: np.random.Generator) -> str:
        if rng.random() < optimal_prob:
            return MOVE_WORDS[int(greedy[env.state])]
        return MOVE_WORDS[int(rng.integers(len(MOVE_WORDS)))]

    return policy
