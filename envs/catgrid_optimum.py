"""The exact optimum of a CatGrid-v0 MDP, computed on its explicit table ``P[s][a]``.

- :func:`value_iteration`: infinite-horizon discounted ``V*`` and a greedy policy.
- :func:`finite_horizon_values`: expected undiscounted return within a time limit, by backward induction.
- :func:`optimal_start_value` / :func:`optimal_start_return`: those numbers at the start cell of an env (single or
  vector, wrapped or not) or of a dict of CatGridEnv kwargs.

Depends on :mod:`envs.catgrid_tables` only; both envs import it for their ``optimal_values`` methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from envs.catgrid_tables import GridTables, build_transition_table, make_tables


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
    """The :class:`GridTables` of an env (``.unwrapped.tables``) or built from a dict of CatGridEnv kwargs."""
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
