"""A Gymnasium 1.x vector env as a stable-baselines3 ``VecEnv`` (needs ``pip install -e ".[interop]"``).

SB3 does not take Gymnasium vector envs: it has its own ``VecEnv`` API (``reset() -> obs``, ``step`` returning
``dones`` and a list of per-env info dicts, autoreset in the same step with ``info["terminal_observation"]``).
:class:`SB3VecEnv` wraps a native vector env (``gym.make_vec("CatGrid-v0", ..., vectorization_mode=
"vector_entry_point", autoreset_mode="SameStep")``) or any Gymnasium vector env whose autoreset mode is
``SAME_STEP`` or ``DISABLED``, so SB3's algorithms (and sb3-contrib's ``MaskablePPO``, through
``env_method("action_masks")``) use the batched env as it is::

    from stable_baselines3 import PPO
    venv = SB3VecEnv(gym.make_vec("CatGrid-v0", num_envs=8, vectorization_mode="vector_entry_point",
                                  autoreset_mode="SameStep"))
    PPO("MlpPolicy", venv).learn(100_000)

Per step, info ``key`` of row i (where ``info["_key"][i]``) goes to ``infos[i][key]``; an ended row also gets
``terminal_observation`` and ``TimeLimit.truncated`` (truncated and not terminated: SB3 then bootstraps).
This module imports stable-baselines3 at the top; ``import envs`` and ``import envs.interop`` do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

__all__ = ["SB3VecEnv"]


def _row(obs: Any, i: int | np.integer) -> Any:
    """Row ``i`` of a batched observation (a dict of arrays or an array), as fresh arrays."""
    if isinstance(obs, dict):
        return {k: np.array(v[i]) for k, v in obs.items()}
    return np.array(obs[i])


def _infos(info: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """A vector info dict (``key`` + ``_key`` masks) as ``n`` per-row dicts; ``final_*`` keys are left out."""
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in info.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask = info.get(f"_{key}", np.ones(n, dtype=bool))
        for i in np.flatnonzero(mask):
            rows[i][key] = _infos(value, n)[i] if isinstance(value, dict) else value[i]
    return rows


class SB3VecEnv(VecEnv):
    """``venv`` (a Gymnasium vector env in ``SAME_STEP`` or ``DISABLED`` autoreset mode) as an SB3 ``VecEnv``.

    ``DISABLED``: ended rows are reset here (``reset(options={"reset_mask": done})``) in the same step.
    ``get_attr`` / ``set_attr`` / ``env_method`` go to ``venv`` (its own ``get_attr``/``set_attr``/``call`` when it
    has them, as ``SyncVectorEnv`` does); a method of a native vector env that returns one (N, ...) array (such
    as ``action_masks``) is split into its rows. ``seed(s)`` seeds the next reset with ``s`` (one generator for
    all rows: the native envs draw every row's randomness from it).
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        mode = getattr(venv, "autoreset_mode", venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED):
            raise ValueError(
                f"SB3VecEnv needs a vector env with autoreset_mode SAME_STEP or DISABLED, got {mode}: build it with "
                "gym.make_vec(..., vectorization_mode='vector_entry_point', autoreset_mode='SameStep') (native envs) "
                "or vector_kwargs={'autoreset_mode': AutoresetMode.SAME_STEP} (sync/async)."
            )
        self.venv, self.autoreset_mode = venv, mode
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]
        options = self._options[0] or None
        obs, info = self.venv.reset(seed=seed, options=options)
        self.reset_infos = _infos(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async(actions).")
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        dones = np.logical_or(terminated, truncated)
        infos = _infos(info, self.num_envs)
        for i in np.flatnonzero(dones):
            final = info["final_obs"][i] if self.autoreset_mode == AutoresetMode.SAME_STEP else _row(obs, i)
            infos[i]["terminal_observation"] = final
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        if self.autoreset_mode == AutoresetMode.DISABLED and dones.any():
            obs, _ = self.venv.reset(options={"reset_mask": dones})
        return obs, np.asarray(rewards, dtype=np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames: Any = self.venv.render() if self.render_mode == "rgb_array" else None
        return list(frames) if frames is not None else [None] * self.num_envs

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        rows = self._get_indices(indices)
        get_attr = getattr(self.venv, "get_attr", None)
        if callable(get_attr):  # SyncVectorEnv, TextGenVectorEnv: one value per row
            values = get_attr(attr_name)
            return [values[i] for i in rows]
        return [getattr(self.venv, attr_name)] * len(list(rows))  # a native env's attributes are shared

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if hasattr(self.venv, "set_attr"):
            self.venv.set_attr(attr_name, value)
        else:
            setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        rows = list(self._get_indices(indices))
        method = getattr(self.venv, method_name, None)
        if method is None and hasattr(self.venv, "call"):
            return [self.venv.call(method_name, *method_args, **method_kwargs)[i] for i in rows]
        if method is None:
            raise AttributeError(f"{type(self.venv).__name__} has no method {method_name!r}.")
        result = method(*method_args, **method_kwargs)
        if isinstance(result, np.ndarray) and result.shape[:1] == (self.num_envs,):
            return [result[i] for i in rows]
        return [result] * len(rows)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))
