"""Vectorized rollouts through any Gymnasium 1.x ``VectorEnv`` (sync, async or native).

Gymnasium 1.x vector envs autoreset on the NEXT step: when row ``i`` ends at step ``t``, the
observation returned is the true final observation, and at step ``t+1`` the env ignores the
action of row ``i``, resets it and returns the first observation of the new episode with
reward 0. The collector therefore

- marks step ``t+1`` of that row invalid (masked out of the loss),
- marks step ``t+2`` as an episode start (networks with memory restart the row),
- computes ``V(final obs)`` for free: it is the value the network returns at step ``t+1``,
  which GAE uses to bootstrap a truncation (and ignores after a termination).

The network is queried exactly once per observation: the output for the observation after
the last step both bootstraps this rollout and acts first in the next one.

KL shaping: if the env declares a ``kl_coef`` attribute β (TextGen-IMDB-v0 does), its reward
is ``β·log π_ref(a_t|s_t)`` (+ the score on the last token) and the collector adds the
agent's half, ``-β·log π_θ(a_t|s_t)`` from the sampling log-prob, so the learner sees
``score - β·(log π_θ - log π_ref)`` per token, as TRL's PPO. The logged per-episode KL
``Σ_t (log π_θ - log π_ref)`` uses the env's ``info["ref_logprob"]``, so it is exact for any β.
With the agent's ``kl_mode="loss"`` the collector instead removes the env's ``β·log π_ref`` (the
learner sees the score alone) and hands ``log π_ref`` and β to the agent's k3 loss term.
With the env's ``ref_mode="one_pass"`` the reference log-probs arrive per episode (at its end, or from
``running_ref_logprobs()`` when the rollout ends mid-episode) and are placed back on their tokens
(:mod:`agents.ref_tokens`), so the learner sees the same per-token reward as in the per-step mode.

Groups (RLOO/GRPO, ``group_size = k >= 2``): a group is the e-th episode of each of the k rows of
block ``row // k``, fixed before any return is seen. Every step records the group id of its
episode: the env's ``info["group_id"]`` when it reports one (TextGen with ``group_size``: the rows
of a block share the e-th prompt), else the collector's :class:`~agents.group_ids.BlockGroups` (CatGrid:
id ``e * (N / k) + row // k``; a row that has finished its episode of group e idles, id -1, until its
block has finished group e). The agent learns a group once all k of its episodes have finished
(:mod:`agents.carry`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.agent import Agent, Rollout
from agents.bootstrap import last_step_output
from agents.env_access import get_kl_coef, set_env_attr
from agents.group_ids import BlockGroups
from agents.history_obs import ChunkEndObs, FullObs, chunk_ends
from agents.masking import ActionMasks, mask_from_info
from agents.ref_tokens import OnePassReference, Placement, RefTokens, uses_one_pass_reference
from agents.validate import group_size_fits


def _stack_masks(masks: list[torch.Tensor | None], n: int) -> ActionMasks | None:
    """Compact (T, N) masks of a rollout; None when the env never masks (steps without one: all allowed)."""
    if all(m is None for m in masks):
        return None
    some = next(m for m in masks if m is not None)  # (N, A)
    full = torch.ones((n, some.shape[-1]), dtype=torch.bool, device=some.device)
    return ActionMasks.stack([full if m is None else m for m in masks])


_RESET_STEP = object()
"""Pending-output marker: the next step is a reset step for every row (no action or value is needed)."""


@dataclass
class EpisodeLog:
    """Statistics of the episodes that finished during one rollout (env rewards, unscaled)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    kls: list[float] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    shaped_returns: list[float] = field(default_factory=list)
    """KL-shaped envs only: Σ_t (score - β(log π_θ - log π_ref)) per episode, what the agent maximises."""
    score_rows: list[int] = field(default_factory=list)
    """env row of each entry of ``scores`` (and of ``prompts``/``responses``/``kls``, which end together)"""
    response_tokens: list[int] = field(default_factory=list)
    """text envs: tokens generated in each scored episode (EOS included), from ``info["new_tokens"]``"""
    reward_parts: dict[str, list[float]] = field(default_factory=dict)
    """TextGen-v0: each reward function's scores of the episodes it applies to (``info["reward/<name>"]``)"""


@dataclass
class _Buffers:
    """The ``(T, N)`` arrays one :meth:`RolloutCollector.collect` fills (``values`` has ``T + 1`` rows)."""

    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: np.ndarray  # float64 while collecting (one-pass KL terms are added later), float32 in the Rollout
    terminated: np.ndarray
    truncated: np.ndarray
    starts: np.ndarray
    valid: np.ndarray
    groups: np.ndarray
    ref_logprobs: np.ndarray | None
    obs: FullObs | ChunkEndObs  # every step's observation, or only the chunk ends' (agents.history_obs)
    masks: list[torch.Tensor | None] = field(default_factory=list)

    @classmethod
    def empty(cls, T: int, N: int, dev: torch.device, with_ref: bool, history: bool) -> _Buffers:
        return cls(
            actions=torch.zeros((T, N), dtype=torch.long, device=dev), logprobs=torch.zeros((T, N), device=dev),
            values=torch.zeros((T + 1, N), device=dev), rewards=np.zeros((T, N)),
            terminated=np.zeros((T, N), dtype=bool), truncated=np.zeros((T, N), dtype=bool),
            starts=np.zeros((T, N), dtype=bool), valid=np.zeros((T, N), dtype=bool),
            groups=np.zeros((T, N), dtype=np.int64),
            ref_logprobs=np.zeros((T, N), dtype=np.float32) if with_ref else None,
            obs=(ChunkEndObs if history else FullObs)(T, N, dev),
        )

    def rollout(self, N: int, kl_coef: float, group_size: int) -> Rollout:
        dev = self.actions.device
        as_t = lambda a: torch.as_tensor(a, device=dev)
        return Rollout(
            obs=self.obs.build(), actions=self.actions, logprobs=self.logprobs, values=self.values,
            rewards=as_t(self.rewards.astype(np.float32)),
            terminated=as_t(self.terminated), truncated=as_t(self.truncated), episode_start=as_t(self.starts),
            valid=as_t(self.valid), action_masks=_stack_masks(self.masks, N), group=as_t(self.groups),
            ref_logprobs=None if self.ref_logprobs is None else as_t(self.ref_logprobs), kl_coef=kl_coef,
            group_size=group_size,
        )


class RolloutCollector(OnePassReference):
    """Collects :class:`~agents.config.Rollout` batches of ``num_steps`` steps from ``envs``.

    ``envs`` should be wrapped in ``gymnasium.wrappers.vector.RecordEpisodeStatistics`` for
    episode returns/lengths. ``reward_scale`` multiplies the (shaped) learning reward only. ``evaluation=True``:
    rollouts no update learns from, so a group-based agent may collect with ``group_size=1``. ``full_obs=True``:
    every step's observation even for a ``history_observation`` network (else one per chunk)."""

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        agent: Agent,
        num_steps: int,
        reward_scale: float = 1.0,
        seed: int | None = None,
        group_size: int = 1,
        kl_coef: float | None = None,
        evaluation: bool = False,
        full_obs: bool = False,
    ) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if not group_size_fits(envs.num_envs, group_size):
            raise ValueError(f"group_size must be >= 1 and divide num_envs={envs.num_envs}, got {group_size}")
        if agent.config.group_based and group_size < 2 and not evaluation:
            raise ValueError(f"algo={agent.config.algo!r} compares the episodes of a group: pass group_size >= 2 "
                             f"(dividing num_envs={envs.num_envs}), got {group_size}")
        if (mode := envs.metadata.get("autoreset_mode")) not in (None, gym.vector.AutoresetMode.NEXT_STEP):
            raise ValueError(f"the rollout collector needs NEXT_STEP autoreset (the default), got {mode}: build the "
                             "vector env without autoreset_mode= (SAME_STEP / DISABLED are for other libraries)")
        self.envs, self.agent, self.num_steps, self.reward_scale = envs, agent, num_steps, reward_scale
        self.num_envs, self.device = envs.num_envs, agent.device
        self.global_step, self._history = 0, agent.net.history_observation and not full_obs  # one context per chunk
        self.obs, info = envs.reset(seed=seed)
        self.mask = mask_from_info(info, self.num_envs, self.device)  # allowed actions at self.obs, or None
        self.group_size = group_size
        self.group = np.arange(self.num_envs, dtype=np.int64) // group_size  # (N,) group of each row's episode
        self._env_groups = "group_id" in info  # the env names the groups (shared prompts)
        self._blocks = BlockGroups(self.num_envs, group_size)  # else the collector does (agents.group_ids)
        if not self._env_groups:
            self.group = self._blocks.group.copy()
        self._update_group(info)
        if agent.config.group_based and not evaluation:
            self._check_env_groups()
        self.episode_start = np.ones(self.num_envs, dtype=bool)
        self.valid = np.ones(self.num_envs, dtype=bool)  # False: next step is a reset step
        self._ep_logp = np.zeros(self.num_envs)  # Σ log π_θ over the running episode
        self._ep_ref = np.zeros(self.num_envs)  # Σ log π_ref over the running episode
        self._ep_shaped = np.zeros(self.num_envs)  # Σ shaped reward (score - β KL) of the running episode
        self.pending: tuple[torch.Tensor, torch.Tensor] | None | object = None  # policy output for self.obs
        self._kl_coef = get_kl_coef(envs)  # None: the env has no KL shaping
        self._refs = RefTokens(self.num_envs) if self._kl_coef is not None and uses_one_pass_reference(envs) else None
        self._placements: list[Placement] = []  # one-pass: this step's log π_ref placements (see collect)
        if kl_coef is not None and self._kl_coef is not None:
            self.set_kl_coef(kl_coef)

    @property
    def kl_coef(self) -> float | None:
        """β of the KL shaping (None when the env has none): the one value the env's half of the reward, the
        collector's half and the agent's loss term all use. Change it with :meth:`set_kl_coef` only."""
        return self._kl_coef

    def set_kl_coef(self, beta: float) -> None:
        """Set β for the next rollouts, in the env (its ``β·log π_ref`` reward) and here (``-β·log π_θ``)."""
        if self._kl_coef is None:
            raise ValueError("this env has no kl_coef (no KL shaping to set)")
        set_env_attr(self.envs, "kl_coef", beta)
        self._kl_coef = float(beta)

    def _update_group(self, info: dict) -> None:
        if "group_id" in info:
            self.group = np.where(info["_group_id"], np.asarray(info["group_id"], dtype=np.int64), self.group)

    def _next_groups(self, done: np.ndarray, starts: np.ndarray) -> None:
        """Without env ids: the group of every row's next episode (:class:`~agents.group_ids.BlockGroups`)."""
        if not self._env_groups:
            self._blocks.ends(done)
            self._blocks.starts(starts)
            self.group = self._blocks.group.copy()

    def _check_env_groups(self) -> None:
        """The env's groups must be the collector's blocks of ``group_size`` rows."""
        blocks = self.group.reshape(-1, self.group_size)  # (N / k, k)
        if self._env_groups and not ((blocks == blocks[:, :1]).all() and len(set(blocks[:, 0])) == len(blocks)):
            raise ValueError(f"the env's group ids {self.group.tolist()} are not blocks of group_size="
                             f"{self.group_size} rows: pass the env's group_size to the collector")

    _STATE = ("obs", "mask", "group", "episode_start", "valid", "_ep_logp", "_ep_ref", "_ep_shaped", "global_step")
    """Attributes that carry over from one rollout to the next (saved for exact resume)."""

    def state_dict(self) -> dict[str, Any]:
        """The collector's state at a rollout boundary (copies); KV caches are rebuilt by :meth:`refresh`."""
        state = {k: copy.deepcopy(getattr(self, k)) for k in self._STATE}
        if self._refs is not None:  # one-pass reference: tokens of running episodes an earlier rollout placed
            state["ref_tokens_before"] = self._refs.before.copy()
        return state | {"_blocks": self._blocks.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self._STATE) - set(state)
        if missing:
            raise ValueError(f"collector state lacks {sorted(missing)}")
        if "_blocks" in state:  # checkpoints before fixed-size groups have none (a fresh schedule is used)
            self._blocks.load_state_dict(state["_blocks"])
        for k in self._STATE:
            value = copy.deepcopy(state[k])
            setattr(self, k, value.to(self.device) if isinstance(value, torch.Tensor) else value)
        if self._refs is not None:
            self._refs.before = np.asarray(state.get("ref_tokens_before", np.zeros(self.num_envs)), np.int64).copy()

    def refresh(self) -> None:
        """Recompute the pending policy output after the weights changed (new rollout).

        A network with state (the LM's KV cache) forgets it and re-reads every row's observation (one batched
        prefill; when every row is at an episode start that is just the prompts). When the next step is a reset
        step for every row (:data:`_RESET_STEP`), its output would be ignored and nothing is computed.
        """
        reset_state = getattr(self.agent.net, "reset_state", None)
        stateful = reset_state is not None
        if reset_state is not None:
            reset_state()
        if self.pending is _RESET_STEP:
            return
        start = np.ones(self.num_envs, dtype=bool) if stateful else self.episode_start
        self.pending = self.agent.policy_step(self.obs, start)

    def collect(self) -> tuple[Rollout, EpisodeLog]:
        """``num_steps`` steps of every env: the rollout to learn from and the episodes that ended in it."""
        T, N, dev = self.num_steps, self.num_envs, self.device
        self.refresh()
        buf = _Buffers.empty(T, N, dev, self.kl_coef is not None and self.agent.config.kl_mode == "loss", self._history)
        log = EpisodeLog()
        for t in range(T):
            step_mask = self.mask  # the allowed actions of the distribution sampled from (top-k/top-p included)
            if self.pending is _RESET_STEP:  # every row ignores its action and needs no value: skip the network
                action = torch.zeros(N, dtype=torch.long, device=dev)
                logprob = value = torch.zeros(N, device=dev)
            else:
                logits, value = self._pending_output()
                action, logprob, step_mask = self.agent.sample_action(logits, self.mask)
            buf.masks.append(step_mask)
            buf.actions[t], buf.logprobs[t], buf.values[t] = action, logprob, value
            buf.starts[t], buf.valid[t], buf.groups[t] = self.episode_start, self.valid, self.group
            next_obs, reward, term, trunc, info = self.envs.step(action.cpu().numpy())
            reward = self._learning_reward(np.asarray(reward, dtype=np.float64), buf, t, info, term, trunc, log)
            buf.rewards[t] = reward * self.reward_scale
            self._place_refs(buf, t)
            buf.terminated[t], buf.truncated[t] = term, trunc
            self._log_episodes(info, log)
            self._update_group(info)
            done = np.logical_or(term, trunc)
            self._next_groups(done & self.valid, ~self.valid)
            self.episode_start = ~self.valid  # the obs after a reset step starts an episode
            self.valid = ~done
            buf.obs.add(t, self.obs, chunk_ends(buf.valid[t], self.valid, self.episode_start, last=t == T - 1))
            self.obs = next_obs
            self.mask = mask_from_info(info, N, dev)
            self.pending = self._next_output(next_obs, trunc, last=t == T - 1)
        if isinstance(self.pending, tuple):
            buf.values[T] = self.pending[1]  # else V(o_T) is never read (see _next_output) and stays 0
        if self._refs is not None:  # one-pass: the episodes still running get their tokens' log π_ref now
            self._flush_running_refs(buf, T)
        self.global_step += T * N
        return buf.rollout(N, float(self._kl_coef or 0.0), self.group_size), log

    def _pending_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's (logits, values) for ``self.obs`` (computed by :meth:`refresh` or the previous step)."""
        assert isinstance(self.pending, tuple), "refresh() computes the output before a step needs it"
        return self.pending

    def _learning_reward(
        self, reward: np.ndarray, buf: _Buffers, t: int, info: dict, term: np.ndarray, trunc: np.ndarray,
        log: EpisodeLog,
    ) -> np.ndarray:
        """The env's reward plus the collector's half of the KL shaping (see the module docstring), (N,) float64."""
        beta = self._kl_coef
        if beta is None:
            return reward
        logp = buf.logprobs[t].cpu().numpy().astype(np.float64)
        if self._refs is not None:
            return self._one_pass_reward(reward, logp, beta, buf, info, np.logical_or(term, trunc), log)
        self._track_kl(logp, reward, beta, info, np.logical_or(term, trunc), log)
        if buf.ref_logprobs is not None:  # kl_mode="loss": learn from the score alone; the agent adds β·k3
            ref = self._ref_logprob(info, reward, beta)  # None only when β = 0 (no KL term)
            ref = np.where(self.valid, 0.0 if ref is None else ref, 0.0)
            buf.ref_logprobs[t] = ref
            reward = reward - beta * ref
        else:
            reward = reward - beta * logp * self.valid
        self._log_shaped_returns(reward, np.logical_or(term, trunc), log)
        return reward

    def _next_output(self, obs: Any, trunc: np.ndarray, last: bool) -> Any:
        """The policy output for ``obs``, or a marker when no one would read it.

        - Every row terminated (none truncated): the next step is a reset step for every row, whose actions the
          env ignores and whose ``V(final obs)`` GAE never reads after a termination -> :data:`_RESET_STEP`.
        - After the last step, when every row starts an episode: the last step was a reset step for every row, so
          ``values[T]`` is never read, and the next rollout's :meth:`refresh` must recompute the output with the
          updated weights anyway -> None (computed there, once); some rows: :func:`agents.bootstrap.last_step_output`.
        """
        if not self.valid.any() and not np.any(trunc):
            return _RESET_STEP
        if last and self.episode_start.all():
            return None
        if last and hasattr(self.agent.net, "reset_state"):
            return last_step_output(self.agent.policy_step, obs, self.episode_start)
        return self.agent.policy_step(obs, self.episode_start)

    def _track_kl(
        self, logp: np.ndarray, reward: np.ndarray, beta: float, info: dict, done: np.ndarray, log: EpisodeLog
    ) -> None:
        """Accumulate Σ(log π_θ − log π_ref) per episode; log it when the episode ends.

        ``log π_ref`` comes from ``info["ref_logprob"]`` (TextGen-IMDB-v0 always reports it, so the KL is exact
        for every β, including 0). An env that does not report it must have β > 0: its reward is then
        ``β·log π_ref`` (+ the score on the last token) and ``log π_ref`` is recovered from it; with β = 0 nothing
        can be recovered and no KL is logged (rather than a wrong one).
        """
        ref = self._ref_logprob(info, reward, beta)
        if ref is None:
            return
        self._ep_logp += np.where(self.valid, logp, 0.0)
        self._ep_ref += np.where(self.valid, ref, 0.0)
        for i in np.flatnonzero(done & self.valid):
            log.kls.append(float(self._ep_logp[i] - self._ep_ref[i]))
        reset = ~self.valid
        self._ep_logp[reset] = 0.0
        self._ep_ref[reset] = 0.0

    def _ref_logprob(self, info: dict, reward: np.ndarray, beta: float) -> np.ndarray | None:
        """log π_ref(a_t|s_t) per row (N,): the env's ``ref_logprob``, else recovered from its reward when
        β > 0 (the env reward is β·log π_ref + the score on the last token), else None."""
        if "ref_logprob" in info:
            return np.asarray(info["ref_logprob"], dtype=np.float64)
        if beta > 0:
            score = np.where(info.get("_score", np.zeros_like(self.valid)), info.get("score", 0.0), 0.0)
            return (reward - score) / beta
        return None

    def _log_shaped_returns(self, reward: np.ndarray, done: np.ndarray, log: EpisodeLog) -> None:
        """With KL shaping, an episode's return is Σ(score - β·KL terms), not the env's half of it."""
        self._ep_shaped += np.where(self.valid, reward, 0.0)
        log.shaped_returns.extend(float(r) for r in self._ep_shaped[done & self.valid])
        self._ep_shaped[done | ~self.valid] = 0.0

    @staticmethod
    def _log_episodes(info: dict, log: EpisodeLog) -> None:
        if "_episode" in info:
            ended = np.flatnonzero(info["_episode"])
            log.returns.extend(float(r) for r in np.asarray(info["episode"]["r"])[ended])
            log.lengths.extend(int(n) for n in np.asarray(info["episode"]["l"])[ended])
        numbers: tuple[tuple[str, list[float]], ...] = (("score", log.scores), ("is_success", log.successes))
        for key, target in numbers:
            if f"_{key}" in info:
                ended = np.flatnonzero(info[f"_{key}"])
                target.extend(float(x) for x in np.asarray(info[key])[ended])
                if key == "score":
                    log.score_rows.extend(int(i) for i in ended)
                    if "new_tokens" in info:
                        log.response_tokens.extend(int(n) for n in np.asarray(info["new_tokens"])[ended])
        for key in [k for k in info if k.startswith("reward/") and f"_{k}" in info]:
            values = np.asarray(info[key], dtype=np.float64)[np.flatnonzero(info[f"_{key}"])]
            log.reward_parts.setdefault(key.removeprefix("reward/"), []).extend(values.tolist())
        strings: tuple[tuple[str, list[str]], ...] = (("text", log.texts), ("prompt", log.prompts),
                                                      ("response", log.responses))
        for key, texts in strings:
            if f"_{key}" in info:
                texts.extend(str(x) for x in np.asarray(info[key], dtype=object)[np.flatnonzero(info[f"_{key}"])])
