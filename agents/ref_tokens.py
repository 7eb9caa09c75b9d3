"""Placing an env's one-pass reference log-probs back on their tokens (``TextGen-IMDB-v0``, ``ref_mode="one_pass"``).

In that mode the env reports ``log π_ref`` of a whole response when its episode ends (``info["ref_logprobs"]``)
and of the responses still running on request (``running_ref_logprobs()``, called when a rollout ends), instead
of one value per step. :class:`RefTokens` counts, per row, the tokens of the running episode that sit in the
current rollout and the ones an earlier rollout already received, so that each log-prob lands on the step of
its token: the learner's per-token reward is then the per-step mode's (see :mod:`agents.rollout`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from agents.env_access import env_attr

__all__ = ["OnePassReference", "Placement", "RefTokens", "running_ref_logprobs", "uses_one_pass_reference"]

Placement = tuple[int, np.ndarray]
"""(row, log π_ref of that row's tokens in this rollout, in order: they end at the current step)"""


def uses_one_pass_reference(envs: gym.vector.VectorEnv) -> bool:
    """True when the env (native vector env, or the sub-envs of a sync/async one) has ``ref_mode="one_pass"``."""
    try:
        return bool(env_attr(envs, "ref_mode") == "one_pass")
    except AttributeError:
        return False


def running_ref_logprobs(envs: gym.vector.VectorEnv) -> list[np.ndarray]:
    """Per row, ``log π_ref`` of the tokens the running episode generated so far (empty when none run)."""
    base: Any = envs.unwrapped
    if isinstance(base, (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv)):
        return [np.asarray(x, dtype=np.float64) for x in base.call("running_ref_logprobs")]
    return [np.asarray(x, dtype=np.float64) for x in base.running_ref_logprobs()]


class RefTokens:
    """Per-row token counts of the running episodes, split at the rollout boundary."""

    def __init__(self, num_envs: int) -> None:
        self.before = np.zeros(num_envs, dtype=np.int64)  # tokens placed by earlier rollouts (carried state)
        self.here = np.zeros(num_envs, dtype=np.int64)  # tokens in the current rollout so far

    def count(self, took_action: np.ndarray) -> None:
        """One step: rows that took an action (``valid``, (N,) bool) have one more token here."""
        self.here += took_action

    def take(self, rows: np.ndarray, per_row: list[np.ndarray] | np.ndarray, finished: bool) -> list[Placement]:
        """The log-probs of ``rows`` that belong to this rollout's tokens; then forget the finished episodes or
        carry the running ones' counts over to the next rollout."""
        out: list[Placement] = []
        for r in rows:
            lp = np.asarray(per_row[r], dtype=np.float64)
            n = int(self.here[r])
            if lp.shape != (int(self.before[r]) + n,):
                raise RuntimeError(
                    f"row {r}: the env reported {lp.size} reference log-probs for an episode of "
                    f"{int(self.before[r]) + n} tokens; ref_mode='one_pass' needs episodes that end on the env's "
                    "own termination (no TimeLimit or other truncation: use ref_mode='per_step' there)."
                )
            out.append((int(r), lp[lp.size - n:]))
            self.before[r] = 0 if finished else self.before[r] + n
            self.here[r] = 0
        return out


class OnePassReference:
    """The rollout collector's one-pass steps (a mixin of :class:`agents.rollout.RolloutCollector`, which owns
    the attributes declared here): take the env's ``β·Σ log π_ref`` off an episode's last step, log the exact
    KL, and put ``β·log π_ref`` (or ``log π_ref`` for ``kl_mode="loss"``) back on each token."""

    envs: gym.vector.VectorEnv
    num_envs: int
    reward_scale: float
    valid: np.ndarray
    _kl_coef: float | None
    _refs: RefTokens | None
    _placements: list[Placement]
    _ep_logp: np.ndarray
    _ep_shaped: np.ndarray

    def _log_shaped_returns(self, reward: np.ndarray, done: np.ndarray, log: Any) -> None:
        raise NotImplementedError

    def _one_pass_reward(
        self, reward: np.ndarray, logp: np.ndarray, beta: float, buf: Any, info: dict, done: np.ndarray,
        log: Any,
    ) -> np.ndarray:
        """One-pass reference: the env paid ``β·Σ log π_ref`` with an episode's last step; take it off there (the
        per-token terms are placed back on their tokens by :meth:`_place_refs`), log the exact KL (N,) float64."""
        refs = self._refs
        assert refs is not None
        refs.count(self.valid)
        ended = np.flatnonzero(done & self.valid)
        if ended.size and "ref_logprobs" not in info:
            raise RuntimeError("ref_mode='one_pass': an episode ended without info['ref_logprobs'] (truncated by a "
                               "wrapper?); use ref_mode='per_step' for envs that truncate.")
        self._placements = refs.take(ended, info["ref_logprobs"], finished=True) if ended.size else []
        ref_total = np.zeros(self.num_envs)  # (N,) Σ_t log π_ref of the episodes that ended here
        for i in ended:
            ref_total[i] = np.asarray(info["ref_logprobs"][i], dtype=np.float64).sum()
        self._ep_logp += np.where(self.valid, logp, 0.0)
        log.kls.extend(float(self._ep_logp[i] - ref_total[i]) for i in ended)
        self._ep_logp[~self.valid] = 0.0
        reward = reward - beta * ref_total  # the score part alone
        loss_mode = buf.ref_logprobs is not None
        if not loss_mode:
            reward = reward - beta * logp * self.valid
            for r, lp in self._placements:  # the shaped return of the episode gets its tokens' ref terms
                self._ep_shaped[r] += beta * lp.sum()
        self._log_shaped_returns(reward, done, log)
        return reward

    def _place_refs(self, buf: Any, t: int) -> None:
        """Put this step's one-pass placements on their tokens: row r's k log-probs on steps t-k+1..t, as
        ``+β·log π_ref`` in the reward (``kl_mode="reward"``) or in ``ref_logprobs`` (``kl_mode="loss"``)."""
        beta = float(self._kl_coef or 0.0)
        for r, lp in self._placements:
            steps = slice(t + 1 - lp.size, t + 1)
            if buf.ref_logprobs is not None:
                buf.ref_logprobs[steps, r] = lp
            else:
                buf.rewards[steps, r] += beta * lp * self.reward_scale
        self._placements = []

    def _flush_running_refs(self, buf: Any, T: int) -> None:
        """After the last step: the log π_ref of the running episodes' tokens in this rollout (one env pass)."""
        refs = self._refs
        assert refs is not None
        running = np.flatnonzero(self.valid & (refs.here > 0))
        if running.size:
            self._placements = refs.take(running, running_ref_logprobs(self.envs), finished=False)
            if buf.ref_logprobs is None:
                for r, lp in self._placements:
                    self._ep_shaped[r] += float(self._kl_coef or 0.0) * lp.sum()
            self._place_refs(buf, T - 1)
        refs.here[:] = 0

