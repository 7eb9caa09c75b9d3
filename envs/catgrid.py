"""CatGrid-v0: a stochastic gridworld with a cat, brooms, bathtubs and meat.

The module holds everything shared by the single env and its numpy-native vector twin
(``envs.catgrid_vector``): map parsing/validation, the random map generator, the per-state
transition arrays, the explicit table ``P[s][a]``, exact value iteration and rendering.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import colorize, seeding

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
ACTION_NAMES = ("Up", "Down", "Left", "Right")
MOVES = np.array([(0, -1), (0, 1), (-1, 0), (1, 0)], dtype=np.int64)  # (A, 2) as (dx, dy)
CELL_REWARDS = {"C": 0.0, ".": 0.0, "B": -1.0, "T": -10.0, "M": 100.0}
CELL_COLOURS = {  # RGB per cell letter for render_mode="rgb_array"
    "C": (205, 225, 245), ".": (235, 235, 225), "B": (150, 105, 55),
    "T": (50, 110, 215), "M": (200, 35, 45),
}
CAT_COLOUR, GRID_COLOUR, CELL_PX = (255, 150, 0), (120, 120, 120), 16
RENDER_LEGEND = (("cat", CAT_COLOUR), ("start 0", CELL_COLOURS["C"]), ("empty 0", CELL_COLOURS["."]),
                 ("broom -1", CELL_COLOURS["B"]), ("bathtub -10", CELL_COLOURS["T"]), ("meat +100", CELL_COLOURS["M"]))
"""(words, RGB) of what the rgb_array frames show, for image legends."""

MAPS: dict[str, list[str]] = {
    # Bathtubs flank the meat; the optimum takes a shortcut over one broom (-1) instead of a
    # two-step detour. A random walk finds the meat in ~10% of 50-step episodes.
    "5x5": [
        "C..B.",
        "..T..",
        ".B.M.",
        "..T..",
        ".....",
    ],
    # Brooms and bathtubs scattered over the board; the optimum (8 moves) threads between
    # them without touching one. A random walk finds the meat in ~7% of 50-step episodes.
    "8x8": [
        "C.B.....",
        "...B..T.",
        ".B......",
        "...T.B..",
        "B...M...",
        "..B...B.",
        ".T...B..",
        "....B..T",
    ],
}

Transition = tuple[float, int, float, bool]  # (prob, next_state, reward, terminated)
TransitionTable = dict[int, dict[int, list[Transition]]]


def xy_to_state(x: Any, y: Any, width: int) -> Any:
    """State index ``s = y * width + x`` (works on ints and integer arrays)."""
    return y * width + x


def state_to_xy(s: Any, width: int) -> tuple[Any, Any]:
    """Inverse of :func:`xy_to_state`: returns ``(x, y)``."""
    y, x = np.divmod(s, width)
    return x, y


def parse_desc(desc: Sequence[str]) -> tuple[str, ...]:
    """Validate a map given as a list of equal-length strings; returns it as a tuple."""
    if isinstance(desc, (str, bytes)) or not isinstance(desc, Sequence):
        raise TypeError(f"desc must be a list of strings, one per row (e.g. ['C.M']), got {desc!r}")
    rows = tuple(desc)
    if any(not isinstance(row, str) for row in rows):
        raise TypeError(f"every row of desc must be a str, got {[type(r).__name__ for r in rows]}")
    if not rows or not rows[0]:
        raise ValueError("desc is empty; give at least one non-empty row, e.g. ['C.M']")
    for i, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise ValueError(
                f"ragged map: row {i} has {len(row)} cells but row 0 has {len(rows[0])}; "
                "all rows of desc must have the same length"
            )
        for x, ch in enumerate(row):
            if ch not in CELL_REWARDS:
                raise ValueError(
                    f"unknown cell letter {ch!r} at (x={x}, y={i}); use C (start), . (empty), "
                    "B (broom), T (bathtub) or M (meat)"
                )
    n_start = sum(row.count("C") for row in rows)
    if n_start != 1:
        raise ValueError(f"desc must contain exactly one start cell 'C', found {n_start}")
    if not any("M" in row for row in rows):
        raise ValueError("desc has no meat cell 'M'; put at least one M in the map")
    return rows


def meat_reachable(desc: Sequence[str], avoid: str = "T") -> bool:
    """Whether some meat cell is reachable from C by moves that never enter a cell in ``avoid``."""
    rows = parse_desc(desc)
    h, w = len(rows), len(rows[0])
    start = next((x, y) for y, row in enumerate(rows) for x, ch in enumerate(row) if ch == "C")
    seen, queue = {start}, deque([start])
    while queue:
        x, y = queue.popleft()
        if rows[y][x] == "M":
            return True
        for dx, dy in MOVES.tolist():
            nx, ny = x + dx, y + dy
            if 0 <= nx < w and 0 <= ny < h and (nx, ny) not in seen and rows[ny][nx] not in avoid:
                seen.add((nx, ny))
                queue.append((nx, ny))
    return False


def generate_random_map(
    size: int = 8, p_broom: float = 0.1, p_bath: float = 0.05, seed: int | None = None
) -> list[str]:
    """A random ``size`` x ``size`` map with C top-left and M bottom-right.

    Each other cell is a broom with probability ``p_broom``, a bathtub with ``p_bath``, else
    empty; maps are redrawn until the meat is reachable from C through empty cells only (no
    bathtub *and* no broom), so it is reachable whatever ``terminal`` is. Same seed, same map.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"size must be an int >= 2, got {size!r}")
    if not (0.0 <= p_broom and 0.0 <= p_bath and p_broom + p_bath < 1.0):
        raise ValueError(
            f"need p_broom >= 0, p_bath >= 0 and p_broom + p_bath < 1, got {p_broom=}, {p_bath=}"
        )
    rng, _ = seeding.np_random(seed)
    for _ in range(10_000):
        board = rng.choice(np.array([".", "B", "T"]), size=(size, size),
                           p=[1.0 - p_broom - p_bath, p_broom, p_bath])  # (H, W)
        board[0, 0], board[-1, -1] = "C", "M"
        rows = ["".join(r) for r in board]
        if meat_reachable(rows, avoid="TB"):
            return rows
    raise RuntimeError(f"no map with a clear path found; lower p_broom + p_bath ({p_broom + p_bath})")


@dataclass(frozen=True)
class GridTables:
    """Per-state arrays describing a CatGrid MDP (shared by the single and vector envs)."""

    desc: tuple[str, ...]
    slip: float
    terminal: str
    start: int
    cells: np.ndarray  # (S,) cell letter per state
    succ: np.ndarray  # (S, A) int64 next state when the move succeeds (wall bump: same state)
    reward: np.ndarray  # (S,) float64 reward for landing on the state
    done: np.ndarray  # (S,) bool: landing on the state ends the episode
    xy: np.ndarray  # (S, 2) int64 observation (x, y) per state

    @property
    def width(self) -> int:
        return len(self.desc[0])

    @property
    def height(self) -> int:
        return len(self.desc)

    @property
    def n_states(self) -> int:
        return self.width * self.height


def make_tables(
    desc: Sequence[str] | None = None, map_name: str = "5x5", slip: float = 0.2, terminal: str = "MT"
) -> GridTables:
    """Validate the constructor arguments shared by both envs and build the per-state arrays."""
    if desc is None:
        if map_name not in MAPS:
            raise ValueError(f"unknown map_name {map_name!r}; choose one of {sorted(MAPS)} or pass desc=")
        desc = MAPS[map_name]
    rows = parse_desc(desc)
    if isinstance(slip, bool) or not isinstance(slip, (int, float, np.floating, np.integer)):
        raise TypeError(f"slip must be a float in [0, 1), got {slip!r}")
    if not 0.0 <= float(slip) < 1.0:
        raise ValueError(f"slip must be in [0, 1) (probability that a move fails), got {slip!r}")
    if not isinstance(terminal, str):
        raise TypeError(f"terminal must be a string of cell letters such as 'MT', got {terminal!r}")
    if not set(terminal) <= set("MTB") or "M" not in terminal:
        raise ValueError(f"terminal must be a subset of 'MTB' that contains 'M', got {terminal!r}")
    h, w = len(rows), len(rows[0])
    cells = np.array(list("".join(rows)))  # (S,)
    xs, ys = state_to_xy(np.arange(h * w), w)  # (S,), (S,)
    nx = np.clip(xs[:, None] + MOVES[None, :, 0], 0, w - 1)  # (S, A)
    ny = np.clip(ys[:, None] + MOVES[None, :, 1], 0, h - 1)  # (S, A)
    return GridTables(
        desc=rows, slip=float(slip), terminal=terminal, start=int(np.flatnonzero(cells == "C")[0]),
        cells=cells, succ=xy_to_state(nx, ny, w).astype(np.int64),
        reward=np.array([CELL_REWARDS[c] for c in cells], dtype=np.float64),
        done=np.isin(cells, list(terminal)), xy=np.stack([xs, ys], axis=1).astype(np.int64),
    )


def build_transition_table(t: GridTables) -> TransitionTable:
    """``P[s][a] = [(prob, next_state, reward, terminated), ...]`` with identical outcomes merged.

    Terminal states are absorbing with reward 0 (the episode has already ended there).
    """
    P: TransitionTable = {}
    for s in range(t.n_states):
        P[s] = {}
        for a in range(len(MOVES)):
            if t.done[s]:
                P[s][a] = [(1.0, s, 0.0, True)]
                continue
            probs: dict[int, float] = {}
            for nxt, p in ((int(t.succ[s, a]), 1.0 - t.slip), (s, t.slip)):
                if p > 0.0:
                    probs[nxt] = probs.get(nxt, 0.0) + p
            P[s][a] = [(p, n, float(t.reward[n]), bool(t.done[n])) for n, p in probs.items()]
    return P


def _flat_table(P: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``P[s][a]`` as flat arrays over its K outcomes: flat (s, a) index, prob, next state, reward, 1 - terminated."""
    n_s, n_a = len(P), len(P[0])
    rows = []  # (K, 6): s, a, prob, next_state, reward, terminated
    for s in range(n_s):
        if len(P[s]) != n_a:
            raise ValueError(f"P[{s}] has {len(P[s])} actions but P[0] has {n_a}")
        for a in range(n_a):
            if abs(sum(o[0] for o in P[s][a]) - 1.0) > 1e-9:
                raise ValueError(f"probabilities of P[{s}][{a}] sum to {sum(o[0] for o in P[s][a])}, not 1")
            rows += [(s, a, p, n, r, d) for p, n, r, d in P[s][a]]
    arr = np.array(rows, dtype=np.float64)  # (K, 6)
    idx = (arr[:, 0] * n_a + arr[:, 1]).astype(np.int64)  # (K,) flat (s, a)
    prob, nxt, rew, cont = arr[:, 2], arr[:, 3].astype(np.int64), arr[:, 4], 1.0 - arr[:, 5]
    return idx, prob, nxt, rew, cont, n_s, n_a


def value_iteration(P: Any, gamma: float = 0.99, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Optimal state values ``V*`` (S,) and a greedy policy (S,) int64 for a table ``P[s][a]``.

    Infinite-horizon discounted values: terminal transitions do not bootstrap and any time limit
    is ignored. Stops when a sweep changes V by less than ``tol`` (so ``|V - V*| < tol*gamma/(1-gamma)``).
    """
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1) for value iteration to converge, got {gamma}")
    if not tol > 0.0:
        raise ValueError(f"tol must be > 0, got {tol}")
    idx, prob, nxt, rew, cont, n_s, n_a = _flat_table(P)

    def backup(v: np.ndarray) -> np.ndarray:  # (S,) -> (S, A)
        target = prob * (rew + gamma * cont * v[nxt])  # (K,)
        return np.bincount(idx, weights=target, minlength=n_s * n_a).reshape(n_s, n_a)

    v = np.zeros(n_s)
    while True:
        v_new = backup(v).max(axis=1)
        delta, v = np.max(np.abs(v_new - v)), v_new
        if delta < tol:
            break
    return v, backup(v).argmax(axis=1).astype(np.int64)


def finite_horizon_values(P: Any, horizon: int, policy: np.ndarray | None = None) -> np.ndarray:
    """Expected UNdiscounted return within ``horizon`` steps from each state (S,), by backward induction:
    ``V_0 = 0``, ``V_k(s) = max_a Σ p·(r + [not terminated]·V_{k-1}(s'))``; with ``policy`` (S,) the action is
    ``policy[s]`` instead of the max. Without a policy no policy can exceed it in expectation under a
    ``horizon``-step time limit (the optimum may depend on the time left)."""
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 0:
        raise ValueError(f"horizon must be an integer >= 0, got {horizon!r}")
    idx, prob, nxt, rew, cont, n_s, n_a = _flat_table(P)
    v = np.zeros(n_s)
    for _ in range(horizon):
        target = prob * (rew + cont * v[nxt])  # (K,)
        q = np.bincount(idx, weights=target, minlength=n_s * n_a).reshape(n_s, n_a)  # (S, A)
        v = q.max(axis=1) if policy is None else q[np.arange(n_s), policy]
    return v


def _tables(env_or_kwargs: Any) -> GridTables:
    if isinstance(env_or_kwargs, Mapping):
        kwargs = {k: v for k, v in env_or_kwargs.items() if k not in ("render_mode", "max_episode_steps")}
        return make_tables(**kwargs)
    return env_or_kwargs.unwrapped.tables


def optimal_start_return(env_or_kwargs: Any, horizon: int = 50, gamma: float | None = None) -> float:
    """Exact expected undiscounted return from the start cell within ``horizon`` steps (the registered time limit is
    50), the quantity ``charts/episodic_return`` measures (unlike the discounted ``V*(start)``): the maximum over
    all policies, or with ``gamma`` that of the discounted-optimal policy π*_γ (what PPO with that γ approaches)."""
    t = _tables(env_or_kwargs)
    P = build_transition_table(t)
    policy = None if gamma is None else value_iteration(P, gamma)[1]
    return float(finite_horizon_values(P, horizon, policy)[t.start])


def optimal_start_value(env_or_kwargs: Any, gamma: float = 0.99) -> float:
    """``V*(start)`` for an env (single or vector, wrapped or not) or a dict of CatGridEnv kwargs."""
    t = _tables(env_or_kwargs)
    v, _ = value_iteration(build_transition_table(t), gamma)
    return float(v[t.start])


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
    (``env.unwrapped.P``), so the optimum is known exactly by :func:`value_iteration`.

    ## Action Space
    ``Discrete(4)``: 0 = up (y - 1), 1 = down (y + 1), 2 = left (x - 1), 3 = right (x + 1).
    Row 0 of the map is the top row. Actions must be integers (Python int, numpy integer or a
    0-d integer array); floats, bools and arrays of another shape raise ``TypeError``.

    ## Observation Space
    ``MultiDiscrete([width, height])`` (int64): the cat's position ``(x, y)``. The state index
    is ``s = y * width + x`` (see :meth:`to_state`, :meth:`to_xy`, :func:`xy_to_state`).

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
    ``reset`` and ``step`` return ``{"prob": p, "cell": letter}``: the probability of the
    transition that happened (1.0 on reset) and the letter of the cell the cat is on.

    ## Arguments
    ```python
    gym.make("CatGrid-v0", render_mode=None, desc=None, map_name="5x5", slip=0.2, terminal="MT")
    ```
    - ``render_mode``: ``None``, ``"ansi"`` (text grid, cat highlighted) or ``"rgb_array"``
      (uint8 image, 16 px per cell, cat drawn in orange; numpy only).
    - ``desc``: custom map, a list of equal-length strings over ``C . B T M`` with exactly one
      ``C`` and at least one ``M``, e.g. ``["C.B", ".TM"]`` or :func:`generate_random_map`.
      Takes precedence over ``map_name``.
    - ``map_name``: ``"5x5"`` (the optimum crosses one broom to save a detour) or ``"8x8"``.
    - ``slip``: probability in [0, 1) that a move fails.
    - ``terminal``: letters of cells that end the episode; subset of ``"MTB"`` containing ``"M"``.

    Optimal values: ``env.unwrapped.optimal_values(gamma)`` or :func:`optimal_start_value`.
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
        """``(V*, greedy policy)`` per state index by :func:`value_iteration` on ``self.P``."""
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
        return self.to_xy(nxt), reward, terminated, False, {"prob": prob, "cell": str(t.cells[nxt])}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.s, self.last_action = self.tables.start, None
        return self.to_xy(self.s), {"prob": 1.0, "cell": str(self.tables.cells[self.s])}

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn('render() called without a render_mode; use gym.make("CatGrid-v0", render_mode="ansi")')
            return None
        if self.render_mode == "ansi":
            return render_ansi(self.tables, self.s, self.last_action)
        return render_rgb(self.tables, np.array([self.s]))[0]
