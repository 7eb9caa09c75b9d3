"""Native vector version of ``TextGen-IMDB-v0``: N review continuations stepped in one batched call.

``gym.make_vec("TextGen-IMDB-v0", num_envs=N, vectorization_mode="vector_entry_point", **kwargs)`` builds
:class:`TextGenVectorEnv`. Every step runs one batched reference-model forward over all rows (one new token per row
from a shared KV cache, see :class:`envs.lm.IncrementalLM`) and scores all rows that finish in one reward-model
batch. Autoreset follows Gymnasium 1.x ``NEXT_STEP`` semantics by default; ``autoreset_mode=`` picks ``SAME_STEP``
or ``DISABLED`` (see :mod:`envs.autoreset`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.autoreset import check_autoreset_mode, refuse_finished_rows, reset_mask, same_step_info
from envs.text_frame import text_frame
from envs.textgen_core import TextGenCore, TextObs
from envs.textgen_face import CoreKLCoef
from envs.textgen_setup import check_render_mode


class TextGenVectorEnv(CoreKLCoef, VectorEnv):
    """``num_envs`` rows of :class:`envs.textgen.TextGenEnv` (same kwargs, same rewards for the same tokens).

    Autoreset (``autoreset_mode``, attribute of the same name; default ``NEXT_STEP``): a row that terminates at
    step t returns its final observation, and at step t+1 it ignores its action, starts a new prompt and returns
    reward 0, ``terminated=False``. ``SAME_STEP``: the row starts its new prompt at step t (the same prompt
    ``NEXT_STEP`` would draw at t+1); the observation is the new one, ``info["final_obs"]``/``info["final_info"]``
    hold the ended episode's last observation and info, while ``ref_logprob``, ``score``, ``text``, ``prompt``
    and ``response`` stay in ``info`` too and the per-row keys describe the new episode. ``DISABLED``: rows stay
    finished until ``reset(options={"reset_mask": mask})`` restarts them (the others keep going). Info follows the
    vector convention: ``info[key]`` is an (N,) array and ``info["_" + key]`` marks the rows that report it (``score``,
    ``text``, ``prompt`` and ``response`` only on rows that just finished; ``ref_logprob`` on rows that took an
    action, for every kl_coef including 0; the others on every row, at reset too: :meth:`TextGenCore.row_info`).
    Keys, rewards and the KL contract: :class:`envs.textgen.TextGenEnv`.

    Groups (``group_size=k``, default 1; RLOO/GRPO): rows ``[j·k, (j+1)·k)`` form group ``j``, and the e-th
    episode of every row of a group continues the same prompt (drawn when the first row of the group starts it),
    so with fixed-length (or masked) episodes the rows of a group reset together and stay aligned. ``num_envs``
    must be a multiple of ``k``. ``info["group_id"]`` (every row, at reset and every step) is the id of the
    prompt group of the episode the row is in after the call: equal ids = same prompt, a new id per group and
    episode (with ``k = 1`` every episode has its own id).

    ``kl_coef`` is shared by all rows: read/write it as an attribute or with ``get_attr``/``set_attr``.
    """

    core_class: type[TextGenCore] = TextGenCore  # the engine (TextGen-v0: its general subclass)
    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self, num_envs: int, render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP, **kwargs: Any,
    ) -> None:
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.autoreset_mode = check_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.core = self.core_class(num_envs, **kwargs)
        self.num_envs = self.core.num_rows
        self.tokenizer = self.core.tokenizer
        self.eos_token_ids = self.core.eos_token_ids  # (E,) every id that ends an episode
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)  # rows that restart on the next step
        self._started = False

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """``name`` of every row (rows share their attributes), like ``SyncVectorEnv.get_attr``."""
        return (getattr(self, name),) * self.num_envs

    def set_attr(self, name: str, values: Any) -> None:
        """Set ``name``: one value, or a list/tuple of ``num_envs`` equal values (the attribute is shared)."""
        if not hasattr(self, name):
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}.")
        if isinstance(values, (list, tuple)):
            if len(values) != self.num_envs or any(v != values[0] for v in values):
                raise ValueError(
                    f"{name!r} is shared by all {self.num_envs} rows: pass one value or {self.num_envs} equal values."
                )
            values = values[0]
        setattr(self, name, values)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[TextObs, dict[str, Any]]:
        super().reset(seed=seed)
        mask = reset_mask(options, self.num_envs)  # (N,)
        if mask.all() or not self._started:
            self.core.reset(self.np_random)
            self._autoreset[:] = False
        elif mask.any():
            self.core.restart_rows(np.flatnonzero(mask), self.np_random)
            self._autoreset[mask] = False
        self._started = True
        info = self.core.row_info()
        return self.core.observation(), info

    def get_state(self) -> dict[str, Any]:
        """Running episodes (token buffers), autoreset flags and RNG, for exact resume."""
        return {"core": self.core.get_state(), "autoreset": self._autoreset.copy(), "started": self._started,
                "np_random": self.np_random.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` (the reference KV cache is recomputed from the token buffers)."""
        self.core.set_state(state["core"])
        self._autoreset = np.asarray(state["autoreset"], dtype=bool).copy()
        self._started = bool(state["started"])
        self.np_random.bit_generator.state = state["np_random"]

    def running_ref_logprobs(self) -> np.ndarray:
        """(N,) object array: per row, ``log π_ref`` (float64, one per token) of the response generated so far by
        an episode still running (an empty array for rows that just finished or have no token yet), from one
        batched teacher-forced pass. The one-pass mode's rollout collector calls it when a rollout ends."""
        out = np.empty(self.num_envs, dtype=object)
        out[:] = [np.zeros(0)] * self.num_envs
        running = np.flatnonzero(~self._autoreset & (self.core.new_tokens > 0))
        for r, lp in zip(running, self.core.response_ref_logprobs(running)):
            out[r] = lp
        return out

    def _check_actions(self, actions: Any) -> np.ndarray:
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().cpu().numpy()
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu":
            raise ValueError(
                f"actions must be an integer array of shape ({self.num_envs},), got dtype {actions.dtype} and shape "
                f"{actions.shape}."
            )
        if actions.size and (actions.min() < 0 or actions.max() >= self.core.vocab_size):
            raise ValueError(f"actions must be token ids in [0, {self.core.vocab_size}); got {actions}.")
        return actions.astype(np.int64)

    def step(self, actions: Any) -> tuple[TextObs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("Call reset() before step().")
        actions = self._check_actions(actions)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            refuse_finished_rows(self._autoreset)
        restart = self._autoreset.copy()  # all False unless NEXT_STEP
        rewards, terminated, info = self.core.step(actions, restart, self.np_random)
        obs = self.core.observation()
        if self.autoreset_mode == AutoresetMode.SAME_STEP and terminated.any():
            rows = [{"input_ids": ids, "attention_mask": mask} for ids, mask in zip(obs["input_ids"],
                                                                                    obs["attention_mask"])]
            info.update(same_step_info(info, terminated, rows))
            self.core.restart_rows(np.flatnonzero(terminated), self.np_random)
            obs = self.core.observation()
            info.update(self.core.row_info())
        else:
            self._autoreset = terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        return obs, rewards, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """(N, V) bool, True = allowed next action of each row (``info["action_mask"]``, for ``MaskablePPO``)."""
        return self.core.action_mask().astype(bool)

    def render(self) -> tuple[str, ...] | tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            return None
        texts = self.core.texts(range(self.num_envs), skip_special_tokens=False)
        return tuple(texts) if self.render_mode == "ansi" else tuple(text_frame(t) for t in texts)
