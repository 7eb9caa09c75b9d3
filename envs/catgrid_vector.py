"""Numpy-native vector version of CatGrid-v0: all N cats are stepped at once.

Used by ``gym.make_vec("CatGrid-v0", num_envs=N)`` (``vector_entry_point``), which passes the
registered ``max_episode_steps=50`` as a keyword argument. Map parsing and the per-state
transition arrays come from :mod:`envs.catgrid_tables`, so both envs share one MDP definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.autoreset import check_autoreset_mode, refuse_finished_rows, reset_mask, same_step_info
from envs.catgrid import render_ansi, render_rgb
from envs.catgrid_optimum import optimal_start_value, value_iteration
from envs.catgrid_tables import MOVES, TransitionTable, build_transition_table, make_tables


class CatGridVectorEnv(VectorEnv):
    """``num_envs`` independent CatGrid-v0 cats stepped with vectorised numpy.

    Same dynamics, rewards and constructor arguments as :class:`envs.catgrid.CatGridEnv`, plus
    ``num_envs`` and ``max_episode_steps`` (``None``: no time limit; ``gym.make_vec`` passes 50).

    - Actions: int array (N,) with values in {0=up, 1=down, 2=left, 3=right}.
    - Observations: int64 array (N, 2) of positions ``(x, y)``.
    - Rewards (N,) float64, terminations / truncations (N,) bool; truncation follows
      ``TimeLimit`` (``True`` once an episode has lasted ``max_episode_steps`` steps).
    - Autoreset: the ``autoreset_mode`` argument (attribute of the same name), ``NEXT_STEP`` by default. A row
      that ended on the previous step is reset on this step (its action is ignored): it returns the start
      observation, reward 0 and ``terminated = truncated = False``. ``SAME_STEP`` and ``DISABLED`` behave as
      Gymnasium's own vector envs do (:mod:`envs.autoreset`).
    - Info: the single env's keys as (N,) arrays with ``_key`` masks (every row): ``prob`` (float64, probability
      of the transition that happened, 1.0 on a reset) and ``cell`` (int64 code, ``CELL_LETTERS[code]`` is the
      letter), plus ``final_obs`` / ``final_info`` in ``SAME_STEP`` mode; ``RecordEpisodeStatistics`` adds
      ``episode``.
    - Randomness: one uniform draw per env per step from ``self.np_random`` decides slips: the rows share one
      generator, so streams differ from ``SyncVectorEnv``'s (one generator per copy, seeded ``seed + i``) after
      the first slip while the distributions are the same. ``reset(seed=s)`` takes an int or a list of N ints
      (the generator is then seeded from the whole list).
    - ``reset(options={"reset_mask": mask})`` resets only the rows where ``mask`` (N,) is True.
    - ``render()`` returns one frame (str or (H, W, 3) uint8) per env, as ``SyncVectorEnv`` does.
    """

    metadata = {
        "render_modes": ["ansi", "rgb_array"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        desc: Sequence[str] | None = None,
        map_name: str = "5x5",
        slip: float = 0.2,
        terminal: str = "MT",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if max_episode_steps is not None and (
            isinstance(max_episode_steps, bool)
            or not isinstance(max_episode_steps, (int, np.integer))
            or max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps must be a positive int or None, got {max_episode_steps!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.autoreset_mode = check_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.num_envs = int(num_envs)
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.tables = make_tables(desc=desc, map_name=map_name, slip=slip, terminal=terminal)
        self.start_state = self.tables.start
        self._P: TransitionTable | None = None

        self.single_action_space = spaces.Discrete(len(MOVES))
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.single_observation_space = spaces.MultiDiscrete(
            [self.tables.width, self.tables.height], dtype=np.int64
        )
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

        n = self.num_envs
        self.states = np.full(n, self.tables.start, dtype=np.int64)  # (N,)
        self.elapsed = np.zeros(n, dtype=np.int64)  # (N,) steps in the current episode
        self.prev_done = np.zeros(n, dtype=bool)  # (N,) episode ended on the previous step
        self.last_actions: np.ndarray | None = None
        self._started = False  # step() before reset() is an error, as in every Gymnasium env

    @property
    def P(self) -> TransitionTable:
        """The explicit table ``P[s][a]`` built from the shared per-state arrays (cached)."""
        if self._P is None:
            self._P = build_transition_table(self.tables)
        return self._P

    def optimal_values(self, gamma: float = 0.99, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
        """``(V*, greedy policy)`` per state index (infinite horizon; time limit ignored)."""
        return value_iteration(self.P, gamma=gamma, tol=tol)

    def optimal_start_value(self, gamma: float = 0.99) -> float:
        """``V*(start)``: the exact optimal discounted return from the start cell."""
        return optimal_start_value(self, gamma)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        one_seed = seed if seed is None or isinstance(seed, (int, np.integer)) else None
        if isinstance(seed, (list, tuple, np.ndarray)):
            if len(seed) != self.num_envs or not all(isinstance(x, (int, np.integer)) and x >= 0 for x in seed):
                raise ValueError(f"seed must be an int or a list of {self.num_envs} ints >= 0, got {seed!r}")
            one_seed = int(np.random.SeedSequence([int(x) for x in seed]).generate_state(1)[0])
        super().reset(seed=None if one_seed is None else int(one_seed))
        mask = reset_mask(options, self.num_envs)  # (N,)
        self.states[mask] = self.tables.start
        self.elapsed[mask] = 0
        self.prev_done[mask] = False
        self._started = True
        return self.tables.xy[self.states], self._info(np.ones(self.num_envs), mask)

    def get_state(self) -> dict[str, Any]:
        """Running episodes and RNG (copies), for exact resume; :meth:`set_state` restores them."""
        return {"states": self.states.copy(), "elapsed": self.elapsed.copy(), "prev_done": self.prev_done.copy(),
                "last_actions": None if self.last_actions is None else self.last_actions.copy(),
                "started": self._started, "np_random": self.np_random.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        for key in ("states", "elapsed", "prev_done"):
            value = np.asarray(state[key]).copy()
            if value.shape != (self.num_envs,):
                raise ValueError(f"saved {key} has shape {value.shape}, this env has {self.num_envs} rows")
            setattr(self, key, value)
        self.last_actions = None if state["last_actions"] is None else np.asarray(state["last_actions"]).copy()
        self._started = bool(state["started"])
        self.np_random.bit_generator.state = state["np_random"]

    def _info(self, prob: np.ndarray, rows: np.ndarray | None = None) -> dict[str, Any]:
        """``prob`` (N,) and the ``cell`` code of each row, reported by ``rows`` (N,) bool (default: every row)."""
        rows = np.ones(self.num_envs, dtype=bool) if rows is None else rows
        return {"prob": prob.astype(np.float64), "_prob": rows.copy(), "cell": self.tables.code[self.states],
                "_cell": rows.copy()}

    def _check_actions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions)
        if a.shape != (self.num_envs,):
            raise ValueError(
                f"actions must have shape ({self.num_envs},) (one per env), got shape {a.shape}"
            )
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"actions must be an integer array (0=up, 1=down, 2=left, 3=right), got dtype {a.dtype}")
        if a.min() < 0 or a.max() >= len(MOVES):
            raise ValueError(f"actions must be in {{0, 1, 2, 3}}, got values in [{a.min()}, {a.max()}]")
        return a

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset(); call reset() first.")
        a = self._check_actions(actions)  # (N,)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            refuse_finished_rows(self.prev_done)
        t, s = self.tables, self.states
        reset_rows = self.prev_done if self.autoreset_mode == AutoresetMode.NEXT_STEP else np.zeros_like(s, bool)
        slipped = self.np_random.random(self.num_envs) < t.slip  # (N,)
        nxt = np.where(slipped, s, t.succ[s, a])  # (N,)
        nxt[reset_rows] = t.start
        reward = t.reward[nxt]  # (N,) fresh copy
        reward[reset_rows] = 0.0
        terminated = t.done[nxt]  # (N,)
        terminated[reset_rows] = False
        self.elapsed += 1
        self.elapsed[reset_rows] = 0
        if self.max_episode_steps is None:
            truncated = np.zeros(self.num_envs, dtype=bool)
        else:
            truncated = self.elapsed >= self.max_episode_steps  # (N,)
        moved = t.succ[s, a] != s  # (N,) the move leads elsewhere: it happened w.p. 1 - slip, failed w.p. slip
        prob = np.where(moved, np.where(nxt == s, t.slip, 1.0 - t.slip), 1.0)  # (N,)
        prob[reset_rows] = 1.0
        self.states, self.last_actions = nxt, a.copy()
        self.last_actions[reset_rows] = -1  # no action was applied to rows being reset
        self.prev_done = terminated | truncated
        obs, info = t.xy[nxt], self._info(prob)
        if self.autoreset_mode == AutoresetMode.SAME_STEP and self.prev_done.any():
            info.update(same_step_info(info, self.prev_done, list(obs)))
            self.states = np.where(self.prev_done, t.start, nxt)
            self.elapsed[self.prev_done] = 0
            prob[self.prev_done] = 1.0  # the rows' info is now that of their reset
            info.update(self._info(prob))
            self.prev_done = np.zeros(self.num_envs, dtype=bool)
            obs = t.xy[self.states]
        return obs, reward, terminated, truncated, info

    def render(self) -> tuple[Any, ...] | None:
        if self.render_mode is None:
            gym.logger.warn('render() called without a render_mode; pass render_mode="rgb_array" to make_vec')
            return None
        if self.render_mode == "rgb_array":
            return tuple(render_rgb(self.tables, self.states))
        acts = self.last_actions if self.last_actions is not None else np.full(self.num_envs, -1)
        return tuple(
            render_ansi(self.tables, int(s), int(a) if a >= 0 else None) for s, a in zip(self.states, acts)
        )
