"""The CatGrid-v0 MDP shared by the single env (:mod:`envs.catgrid`) and its vector twin (:mod:`envs.catgrid_vector`).

Map parsing/validation, the random map generator, the per-state transition arrays (:class:`GridTables`) and the
explicit table ``P[s][a]``; the exact optimum over that table is in :mod:`envs.catgrid_optimum`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium.utils import seeding

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
ACTION_NAMES = ("Up", "Down", "Left", "Right")
MOVES = np.array([(0, -1), (0, 1), (-1, 0), (1, 0)], dtype=np.int64)  # (A, 2) as (dx, dy)
CELL_REWARDS = {"C": 0.0, ".": 0.0, "B": -1.0, "T": -10.0, "M": 100.0}
CELL_LETTERS = "".join(CELL_REWARDS)
"""The cell letters in code order: ``info["cell"]`` is an index into it (``CELL_LETTERS[info["cell"]]`` = letter)."""

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
    code: np.ndarray  # (S,) int64 index of each cell's letter in CELL_LETTERS (``info["cell"]``)

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
        code=np.array([CELL_LETTERS.index(c) for c in cells], dtype=np.int64),
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
