"""CatGrid-v0: a stochastic gridworld with a cat, brooms, bathtubs and meat.

The single env :class:`CatGridEnv` and the rendering it shares with its numpy-native vector twin
(:mod:`envs.catgrid_vector`). The MDP itself (maps, per-state arrays, ``P[s][a]``) is in :mod:`envs.catgrid_tables`,
its exact optimum in :mod:`envs.catgrid_optimum`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import colorize

from envs.catgrid_optimum import optimal_start_value, value_iteration
from envs.catgrid_tables import ACTION_NAMES, MOVES, GridTables, build_transition_table, make_tables, xy_to_state

CELL_COLOURS = {  # RGB per cell letter for render_mode="rgb_array"
    "C": (205, 225, 245), ".": (235, 235, 225), "B": (150, 105, 55),
    "T": (50, 110, 215), "M": (200, 35, 45),
}
CAT_COLOUR, GRID_COLOUR, CELL_PX = (255, 150, 0), (120, 120, 120), 16
RENDER_LEGEND = (("cat", CAT_COLOUR), ("start 0", CELL_COLOURS["C"]), ("empty 0", CELL_COLOURS["."]),
                 ("broom -1", CELL_COLOURS["B"]), ("bathtub -10", CELL_COLOURS["T"]), ("meat +100", CELL_COLOURS["M"]))
"""(words, RGB) of what the rgb_array frames show, for image legends."""


def render_rgb(t: GridTables, states: np.ndarray) -> np.ndarray:
    """Images (N, H*16, W*16, 3) uint8 of the grid with the cat drawn on ``states`` (N,)."""
    c = CELL_PX
    colours = np.array([CELL_COLOURS[ch] for ch in t.cells], dtype=np.uint8)  # (S, 3)
    cell_img = np.repeat(np.repeat(colours.reshape(t.height, t.width, 3), c, 0), c, 1)  # (H*c, W*c, 3)
    cell_img[::c, :], cell_img[:, ::c] = GRID_COLOUR, GRID_COLOUR
    frames = np.repeat(cell_img[None], len(states), axis=0)  # (N, H*c, W*c, 3)
    yy, xx = np.mgrid[0:c, 0:c] + 0.5  # (c, c)
    cat = (yy - c / 2) ** 2 + (xx - c / 2) ** 2 <= (0.35 * c) ** 2  # (c, c) disc
    ear = (yy < c * 0.45) & (np.abs(xx - c / 2) > c * 0.12) & (np.abs(xx - c / 2) < c * 0.38)
    ear &= yy > c * 0.1 + np.abs(np.abs(xx - c / 2) - c * 0.25) * 1.2  # two triangular ears
    mask_y, mask_x = np.nonzero(cat | ear)  # (P,), (P,)
    x, y = t.xy[states, 0], t.xy[states, 1]  # (N,), (N,)
    n = np.arange(len(states))[:, None]  # (N, 1)
    frames[n, y[:, None] * c + mask_y[None], x[:, None] * c + mask_x[None]] = CAT_COLOUR
    return frames


def render_ansi(t: GridTables, state: int, last_action: int | None) -> str:
    """Text grid, the cat's cell highlighted in red, preceded by the last action (if any)."""
    x, y = (int(v) for v in t.xy[state])
    lines = [f"  ({ACTION_NAMES[last_action]})\n" if last_action is not None else ""]
    for row_y, row in enumerate(t.desc):
        chars = [colorize(ch, "red", highlight=True) if (cx, row_y) == (x, y) else ch
                 for cx, ch in enumerate(row)]
        lines.append("".join(chars) + "\n")
    return "".join(lines)


class CatGridEnv(gym.Env[np.ndarray, np.int64]):
    """A cat walks a grid towards a piece of meat, avoiding brooms and bathtubs.

    ## Description
    The cat starts on cell ``C`` of a grid (FrozenLake-style map of letters) and has to reach
    the meat ``M``. Brooms ``B`` cost a little, bathtubs ``T`` cost a lot and end the episode.
    The cat's wheels slip: with probability ``slip`` a move fails and the cat stays where it is.
    Walking into the outer wall also leaves the cat in place. The MDP is small and explicit
    (``env.unwrapped.P``), so the optimum is known exactly by :func:`envs.catgrid_optimum.value_iteration`.

    ## Action Space
    ``Discrete(4)``: 0 = up (y - 1), 1 = down (y + 1), 2 = left (x - 1), 3 = right (x + 1).
    Row 0 of the map is the top row. Actions must be integers (Python int, numpy integer or a
    0-d integer array); floats, bools and arrays of another shape raise ``TypeError``.

    ## Observation Space
    ``MultiDiscrete([width, height])`` (int64): the cat's position ``(x, y)``. The state index
    is ``s = y * width + x`` (see :meth:`to_state`, :meth:`to_xy`, :func:`envs.catgrid_tables.xy_to_state`).

    ## Starting State
    Always the ``C`` cell (deterministic).

    ## Rewards
    The reward is that of the cell the cat lands on, also when it stays in place:
    empty ``.`` and start ``C``: 0, broom ``B``: -1, bathtub ``T``: -10, meat ``M``: +100.

    ## Episode End
    - Termination: the cat lands on a cell whose letter is in ``terminal`` (default ``"MT"``:
      meat and bathtub). Stepping again after termination keeps the cat there with reward 0.
    - Truncation: after 50 steps, by the ``TimeLimit`` that ``gym.make("CatGrid-v0")`` adds.

    ## Information
    ``reset`` and ``step`` return ``{"prob": p, "cell": code}``: the probability of the
    transition that happened (1.0 on reset) and the cell the cat is on as an int code (numeric, so that batched
    clients such as TorchRL can stack it): ``envs.catgrid_tables.CELL_LETTERS[code]`` is its letter
    (``C`` start, ``.`` floor, ``B`` broom, ``T`` bathtub, ``M`` meat).

    ## Arguments
    ```python
    gym.make("CatGrid-v0", render_mode=None, desc=None, map_name="5x5", slip=0.2, terminal="MT")
    ```
    - ``render_mode``: ``None``, ``"ansi"`` (text grid, cat highlighted) or ``"rgb_array"``
      (uint8 image, 16 px per cell, cat drawn in orange; numpy only).
    - ``desc``: custom map, a list of equal-length strings over ``C . B T M`` with exactly one
      ``C`` and at least one ``M``, e.g. ``["C.B", ".TM"]`` or :func:`envs.catgrid_tables.generate_random_map`.
      Takes precedence over ``map_name``.
    - ``map_name``: ``"5x5"`` (the optimum crosses one broom to save a detour) or ``"8x8"``.
    - ``slip``: probability in [0, 1) that a move fails.
    - ``terminal``: letters of cells that end the episode; subset of ``"MTB"`` containing ``"M"``.

    Optimal values: ``env.unwrapped.optimal_values(gamma)`` or :func:`envs.catgrid_optimum.optimal_start_value`.
    They are infinite-horizon discounted values; the 50-step time limit is ignored.

    ## Version History
    - v0: Initial version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    render_legend = RENDER_LEGEND
    action_names = ACTION_NAMES

    def __init__(
        self,
        render_mode: str | None = None,
        desc: Sequence[str] | None = None,
        map_name: str = "5x5",
        slip: float = 0.2,
        terminal: str = "MT",
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.tables = make_tables(desc=desc, map_name=map_name, slip=slip, terminal=terminal)
        self.P = build_transition_table(self.tables)
        self.desc = self.tables.desc
        self.action_space = spaces.Discrete(len(MOVES))
        self.observation_space = spaces.MultiDiscrete([self.tables.width, self.tables.height], dtype=np.int64)
        self.start_state = self.tables.start
        self.s = self.tables.start
        self.last_action: int | None = None

    def to_state(self, obs: np.ndarray) -> int:
        """State index of an observation ``(x, y)``."""
        return int(xy_to_state(int(obs[0]), int(obs[1]), self.tables.width))

    def to_xy(self, s: int) -> np.ndarray:
        """Observation ``(x, y)`` (2,) int64 of a state index."""
        return self.tables.xy[s].copy()

    def optimal_values(self, gamma: float = 0.99, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
        """``(V*, greedy policy)`` per state index by :func:`envs.catgrid_optimum.value_iteration` on ``self.P``."""
        return value_iteration(self.P, gamma=gamma, tol=tol)

    def optimal_start_value(self, gamma: float = 0.99) -> float:
        """``V*(start)``: the exact optimal discounted return from the start cell."""
        return optimal_start_value(self, gamma)

    def _check_action(self, action: Any) -> int:
        if isinstance(action, (bool, np.bool_)) or not (
            isinstance(action, (int, np.integer))
            or (isinstance(action, np.ndarray) and action.shape == () and np.issubdtype(action.dtype, np.integer))
        ):
            raise TypeError(
                f"action must be an integer in {{0, 1, 2, 3}} (0=up, 1=down, 2=left, 3=right), "
                f"got {action!r} of type {type(action).__name__}"
            )
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in {{0, 1, 2, 3}} (0=up, 1=down, 2=left, 3=right), got {action!r}")
        return int(action)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = self._check_action(action)
        t, s = self.tables, self.s
        if t.done[s]:  # the episode already ended: absorbing, as in P
            nxt, reward, terminated = s, 0.0, True
        else:
            slipped = self.np_random.random() < t.slip
            nxt = s if slipped else int(t.succ[s, a])
            reward, terminated = float(t.reward[nxt]), bool(t.done[nxt])
        prob = sum(p for p, n, _, _ in self.P[s][a] if n == nxt)
        self.s, self.last_action = nxt, a
        return self.to_xy(nxt), reward, terminated, False, {"prob": prob, "cell": int(t.code[nxt])}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.s, self.last_action = self.tables.start, None
        return self.to_xy(self.s), {"prob": 1.0, "cell": int(self.tables.code[self.s])}

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn('render() called without a render_mode; use gym.make("CatGrid-v0", render_mode="ansi")')
            return None
        if self.render_mode == "ansi":
            return render_ansi(self.tables, self.s, self.last_action)
        return render_rgb(self.tables, np.array([self.s]))[0]
