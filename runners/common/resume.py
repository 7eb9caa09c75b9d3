"""Exact resume: everything besides the weights that decides what a run does next.

Stopping a run at a rollout boundary and resuming it must reproduce the uninterrupted run
bit for bit (CPU, same thread count). At a checkpoint this module captures

- the global RNGs: torch (CPU and CUDA), numpy's legacy global generator, Python's ``random``;
- the vector env: its ``np_random`` and its running episodes (native vector envs expose
  ``get_state()`` / ``set_state()``), and the episode accumulators of
  ``RecordEpisodeStatistics``;
- the rollout collector at the boundary (current observations, episode-start/valid flags,
  running per-episode sums; see :meth:`agents.rollout.RolloutCollector.state_dict`) and
  REINFORCE, RLOO and GRPO carried steps of unfinished episodes (``Agent.carry``);
- where the LR schedule stands, with the rule for resuming to a different total
  (:func:`set_lr_schedule`).

KV caches are not saved: the collector re-prefills the policy at every rollout start and the
text env rebuilds its reference cache from its token buffers — at every checkpoint, in the
uninterrupted run too, so both runs compute the same numbers.

Sync/async vector envs (``--vectorization-mode sync|async``) hide their sub-envs' running
state; for them only RNGs and weights are restored and the envs restart their episodes
(a warning says so).
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.agent import Agent, Rollout
from agents.history_obs import HistoryObs
from agents.masking import ActionMasks
from agents.rollout import RolloutCollector

_EPISODE_STATS = ("episode_returns", "episode_lengths", "prev_dones", "episode_count")


def capture_rngs() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": list(np.random.get_state()), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rngs(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(tuple(state["numpy"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _stats_wrapper(envs: gym.vector.VectorEnv) -> Any:
    env = envs
    while isinstance(env, gym.vector.VectorWrapper):
        if isinstance(env, gym.wrappers.vector.RecordEpisodeStatistics):
            return env
        env = env.env
    return None


def supports_exact_resume(envs: gym.vector.VectorEnv) -> bool:
    return hasattr(envs.unwrapped, "get_state") and hasattr(envs.unwrapped, "set_state")


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def pack_carry(carry: Rollout | None) -> dict[str, Any] | None:
    """The carried unfinished-episode steps (:attr:`Agent.carry`) as plain tensors/dicts."""
    if carry is None:
        return None
    d = {f.name: getattr(carry, f.name) for f in dataclasses.fields(carry)}
    if d["action_masks"] is not None:
        d["action_masks"] = {"table": d["action_masks"].table, "index": d["action_masks"].index}
    if isinstance(d["obs"], HistoryObs):
        d["obs"] = d["obs"].pack()
    return d


def unpack_carry(d: dict[str, Any] | None, device: torch.device) -> Rollout | None:
    if d is None:
        return None
    d = _to(dict(d), device)
    if d["action_masks"] is not None:
        d["action_masks"] = ActionMasks(d["action_masks"]["table"], d["action_masks"]["index"])
    return Rollout(**d | {"obs": HistoryObs.unpack(d["obs"])})


def capture(envs: gym.vector.VectorEnv, collector: RolloutCollector) -> dict[str, Any]:
    """Everything needed to continue from this rollout boundary exactly (see the module docstring)."""
    state: dict[str, Any] = {"rngs": capture_rngs(), "collector": collector.state_dict(),
                             "agent_carry": pack_carry(getattr(collector.agent, "carry", None))}
    if supports_exact_resume(envs):
        state["env"] = envs.unwrapped.get_state()
        # the uninterrupted run goes through the same restore as a resumed one: caches rebuilt by
        # recomputation (the text env's reference KV cache) then hold bit-identical numbers in both
        envs.unwrapped.set_state(state["env"])
    stats = _stats_wrapper(envs)
    if stats is not None:
        state["episode_stats"] = {k: getattr(stats, k) for k in _EPISODE_STATS}
    return state


def restore(envs: gym.vector.VectorEnv, collector: RolloutCollector, state: dict[str, Any] | None) -> bool:
    """Restore a :func:`capture` d state into freshly built ``envs``/``collector``; False when
    only the RNGs could be restored (no state saved, or an env without ``set_state``)."""
    if state is None:
        warnings.warn("the checkpoint has no resume state (older format): envs restart their episodes, "
                      "so the resumed run differs from an uninterrupted one", stacklevel=2)
        return False
    exact = "env" in state and supports_exact_resume(envs)
    if exact:
        envs.unwrapped.set_state(state["env"])
        stats = _stats_wrapper(envs)
        if stats is not None and "episode_stats" in state:
            for k, v in state["episode_stats"].items():
                setattr(stats, k, v)
        collector.load_state_dict(state["collector"])
        if hasattr(collector.agent, "carry"):
            collector.agent.carry = unpack_carry(state.get("agent_carry"), collector.agent.device)
    else:
        warnings.warn(f"{type(envs.unwrapped).__name__} cannot save its running episodes (use the native "
                      "--vectorization-mode vector_entry_point for exact resume): envs restart their episodes",
                      stacklevel=2)
    restore_rngs(state["rngs"])
    return exact


def lr_schedule(agent: Agent) -> dict[str, Any]:
    """Where the linear LR decay stands: from ``start_fraction`` x lr at ``start_update`` to 0 at ``total_updates``."""
    u0, f0 = agent.lr_schedule_start
    return {"total_updates": agent.total_updates, "start_update": u0, "start_fraction": f0}


def set_lr_schedule(agent: Agent, cfg: Any, state: dict[str, Any]) -> None:
    """The resume rule: the LR schedule is fixed by the run's ORIGINAL total, so resuming never bends it.

    A smaller --total-timesteps just stops earlier on the same schedule. A larger one with
    ``anneal_lr`` would train at LR 0 past the original end, so it is an error unless
    ``--reset-schedule``: then the LR follows the schedule of the new total, as if the run had been
    started with it (``lr · (1 - update / new_total)``, a jump up at the resume point).
    """
    c = state["config"]
    saved = state.get("lr_schedule") or {"total_updates": c["total_timesteps"] // (c["num_envs"] * c["num_steps"]),
                                         "start_update": 0, "start_fraction": 1.0}
    agent.total_updates = saved["total_updates"]
    agent.lr_schedule_start = (saved["start_update"], saved["start_fraction"])
    if not cfg.agent.anneal_lr:
        agent.total_updates = max(agent.total_updates, cfg.num_updates)
        return
    if cfg.num_updates <= agent.total_updates:
        return
    if not cfg.reset_schedule:
        raise ValueError(
            f"--total-timesteps {cfg.total_timesteps} asks for {cfg.num_updates} updates but the LR schedule of "
            f"this run anneals to 0 at update {agent.total_updates}: pass --reset-schedule to anneal as if the run "
            "had been started with the new total, or --agent.no-anneal-lr"
        )
    agent.lr_schedule_start = (0, 1.0)
    agent.total_updates = cfg.num_updates
