"""REINFORCE without selection bias: carry the steps of unfinished episodes to the next rollout.

Monte-Carlo returns need a step's whole future, so REINFORCE can only learn from a step once its
episode has ended. Dropping the steps of episodes still running at the end of a rollout would
make "is this step learned from" depend on the step's own later actions (actions that end
episodes early would be over-weighted). Instead :func:`unfinished_tail` keeps those steps and
:func:`prepend` puts them, per env column, in front of the next rollout (``(T, N)`` time-major,
left-padded with invalid steps), so every step of every episode is learned from exactly once,
when its episode has finished. Group algorithms (RLOO, GRPO) also carry finished episodes whose
group-mates are still running (``pending``), so a group is learned once, complete. Works on
any :class:`agents.config.Rollout` (all its time-major
fields are carried, dict observations and compact action masks included).
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from agents.history_obs import HistoryObs
from agents.masking import ActionMasks

if TYPE_CHECKING:
    from agents.config import Rollout


def _time_map(fn: Any, *xs: Any) -> Any:
    """Apply ``fn`` to time-major tensors, recursing into dicts (dict observations).

    Optional fields that are None stay None; scalar fields (e.g. ``kl_coef``) take the last
    rollout's value.
    """
    if all(x is None for x in xs):
        return None
    if any(x is None for x in xs):
        raise ValueError("cannot carry a Rollout field that only some of the rollouts have; use one collector")
    if any(isinstance(x, HistoryObs) for x in xs):  # one context per chunk (agents.history_obs)
        if not all(isinstance(x, HistoryObs) for x in xs):
            raise ValueError("cannot carry steps between rollouts that store their observations differently")
        return fn(*xs)
    if isinstance(xs[0], dict):
        return {k: _time_map(fn, *(x[k] for x in xs)) for k in xs[0]}
    if not isinstance(xs[0], torch.Tensor):
        return xs[-1]
    return fn(*xs)


def _rows(x: Tensor | HistoryObs, start: int, stop: int) -> Tensor | HistoryObs:
    """Rows ``start:stop`` of a time-major field (copied, so the rest of the rollout can be freed)."""
    return x.time_slice(start, stop) if isinstance(x, HistoryObs) else x[start:stop].clone()


def _cat(a: Tensor | HistoryObs, b: Tensor | HistoryObs) -> Tensor | HistoryObs:
    """Two time-major fields one after the other."""
    if isinstance(a, HistoryObs) and isinstance(b, HistoryObs):
        return HistoryObs.cat(a, b)
    assert isinstance(a, Tensor) and isinstance(b, Tensor)
    return torch.cat([a, b])


def _slice_masks(m: ActionMasks | None, start: int, stop: int) -> ActionMasks | None:
    return None if m is None else ActionMasks(m.table, m.index[start:stop].clone())


def _cat_masks(a: ActionMasks | None, b: ActionMasks | None, a_shape: tuple, b_shape: tuple) -> ActionMasks | None:
    """Masks of two rollouts one after the other (None: every action allowed)."""
    if a is None and b is None:
        return None
    some = a if a is not None else b
    assert some is not None
    num_actions, device = some.table.shape[1], some.table.device
    full = lambda shape: ActionMasks(torch.ones((1, num_actions), dtype=torch.bool, device=device),  # noqa: E731
                                     torch.zeros(shape, dtype=torch.long, device=device))
    a, b = a or full(a_shape), b or full(b_shape)
    return ActionMasks(torch.cat([a.table, b.table]), torch.cat([a.index, b.index + a.table.shape[0]]))


def unfinished_tail(ro: Rollout, pending: Tensor | None = None) -> Rollout | None:
    """The steps of the episodes still running at the end of ``ro``, as a ``(C, N)`` rollout.

    Column ``i`` holds its running episode's steps in its last rows; rows before them are
    padding (``valid`` False, no flags, reward 0). ``values`` has ``C`` rows (no bootstrap
    row). None when every column's last step ended an episode (or was a reset step).

    ``pending`` (T, N) bool (group algorithms) names the steps to carry instead: episodes
    still running and finished episodes whose group has not finished yet. Each column keeps
    the ``pending`` steps from its first one on (the reset steps between them stay invalid).
    """
    T = ro.valid.shape[0]
    t = torch.arange(T, device=ro.valid.device).unsqueeze(1)  # (T, 1)
    if pending is None:
        done = ro.valid & (ro.terminated | ro.truncated)  # (T, N)
        last_end = torch.where(done, t, -1).amax(0)  # (N,)
        keep = (t > last_end) & ro.valid  # (T, N): a suffix of every column
    else:
        keep = pending & ro.valid
    first = torch.where(keep, t, T).amin(0)  # (N,) first carried row of every column
    C = T - int(first.min())
    if C == 0:
        return None
    keep = keep[T - C:]
    tail = {f.name: _time_map(lambda x: _rows(x, T - C, T), getattr(ro, f.name))
            for f in fields(ro) if f.name != "action_masks"}
    tail["action_masks"] = _slice_masks(ro.action_masks, T - C, T)
    for name in ("valid", "episode_start", "terminated", "truncated"):
        tail[name] = tail[name] & keep
    tail["rewards"] = torch.where(keep, tail["rewards"], 0.0)
    return type(ro)(**tail)


def prepend(carry: Rollout | None, ro: Rollout) -> Rollout:
    """``carry`` (from :func:`unfinished_tail` of the previous rollout) followed by ``ro``.

    When an episode still running at the end of the carry cannot continue in ``ro`` (``ro``
    starts its column with a new episode or a reset step: the collector was reset), the whole
    carry is dropped (its groups could never be completed).
    """
    if carry is None or carry.valid.shape[1] != ro.valid.shape[1]:
        return ro
    continues = ro.valid[0] & ~ro.episode_start[0]  # (N,)
    running = carry.valid[-1] & ~(carry.terminated[-1] | carry.truncated[-1])  # (N,)
    if bool((running & ~continues).any()):
        return ro
    out = {f.name: _time_map(_cat, getattr(carry, f.name), getattr(ro, f.name))
           for f in fields(ro) if f.name != "action_masks"}
    out["action_masks"] = _cat_masks(carry.action_masks, ro.action_masks, tuple(carry.valid.shape),
                                     tuple(ro.valid.shape))
    return type(ro)(**out)
