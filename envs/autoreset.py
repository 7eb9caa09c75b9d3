"""The three Gymnasium 1.x autoreset modes, shared by the native vector envs (CatGrid, TextGen).

- ``NEXT_STEP`` (default, as ``gym.make_vec``): a row that ended at step t is reset at step t+1, which ignores
  its action and returns the first observation with reward 0.
- ``SAME_STEP``: a row that ends is reset in the same call; the observation is the new episode's first,
  ``info["final_obs"]`` (object array (N,), one row's observation) and ``info["final_info"]`` (the vector info
  of the ended rows) carry the last step of the ended episode, with ``_final_obs`` / ``_final_info`` masks.
- ``DISABLED``: no autoreset; ``reset(options={"reset_mask": mask})`` resets the rows where ``mask`` is True
  (TorchRL's preferred mode); stepping a finished row is an error.

The mode is the ``autoreset_mode`` constructor argument, exposed as the ``autoreset_mode`` attribute (what
TorchRL's ``GymWrapper`` reads) and in the instance's ``metadata["autoreset_mode"]`` (what Gymnasium reads).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

__all__ = ["AutoresetMode", "check_autoreset_mode", "reset_mask", "same_step_info", "refuse_finished_rows"]


def check_autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    """``mode`` as an :class:`AutoresetMode` (its value ``"NextStep"``, ``"SameStep"``, ``"Disabled"`` works too)."""
    try:
        return mode if isinstance(mode, AutoresetMode) else AutoresetMode(mode)
    except ValueError:
        raise ValueError(
            f"autoreset_mode must be a gymnasium.vector.AutoresetMode (NEXT_STEP, SAME_STEP or DISABLED) or its "
            f"value ({', '.join(repr(m.value) for m in AutoresetMode)}), got {mode!r}."
        ) from None


def reset_mask(options: dict[str, Any] | None, num_envs: int) -> np.ndarray:
    """(N,) bool: the rows ``reset(options=...)`` resets (``options["reset_mask"]``, default every row)."""
    if options is None or "reset_mask" not in options:
        return np.ones(num_envs, dtype=bool)
    mask = np.asarray(options["reset_mask"])
    if mask.shape != (num_envs,) or mask.dtype != np.bool_:
        raise ValueError(
            f"options['reset_mask'] must be a bool array of shape ({num_envs},), got dtype {mask.dtype} shape "
            f"{mask.shape}"
        )
    return mask.copy()


def refuse_finished_rows(finished: np.ndarray) -> None:
    """``DISABLED`` mode: stepping a row whose episode ended is an error that says how to reset it."""
    if finished.any():
        raise RuntimeError(
            f"rows {np.flatnonzero(finished).tolist()} have finished their episodes and autoreset_mode is DISABLED: "
            "reset them first with env.reset(options={'reset_mask': mask}) (mask = terminated | truncated)."
        )


def same_step_info(info: dict[str, Any], done: np.ndarray, obs_rows: list[Any]) -> dict[str, Any]:
    """``final_obs`` / ``final_info`` (+ masks) of the rows in ``done`` (N,) bool, as ``SyncVectorEnv`` reports
    them in ``SAME_STEP`` mode; ``obs_rows[i]`` is row i's last observation (read only where ``done``)."""
    final_obs = np.full(done.shape[0], None, dtype=object)
    for i in np.flatnonzero(done):
        final_obs[i] = obs_rows[i]
    final_info = {k: (v & done if k.startswith("_") else v) for k, v in info.items()}
    return {"final_obs": final_obs, "_final_obs": done.copy(), "final_info": final_info, "_final_info": done.copy()}
