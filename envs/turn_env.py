"""Any string-level turn env as a token-level Gymnasium env: ``TurnTokenEnv`` (one row) and its native vector twin.

Both are thin faces over :class:`envs.turn_core.TurnTokenCore`, so they give the same rewards for the same
tokens; :class:`TurnTokenEnv`'s docstring is the spec of both (and of ``CatGrid-Text-v0``, which registers them
over :class:`envs.catgrid_turns.CatGridTurnEnv`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.turn_core import TurnTokenCore

__all__ = ["TurnTokenEnv", "TurnTokenVectorEnv"]


def _check_actions(actions: Any, n: int, vocab: int) -> np.ndarray:
    if isinstance(actions, torch.Tensor):
        actions = actions.detach().cpu().numpy()
    actions = np.asarray(actions)
    if actions.shape != (n,) or actions.dtype.kind not in "iu":
        raise ValueError(f"actions must be an integer array of shape ({n},), got {actions.dtype} {actions.shape}.")
    if actions.size and (actions.min() < 0 or actions.max() >= vocab):
        raise ValueError(f"actions must be token ids in [0, {vocab}); got {actions}.")
    return actions.astype(np.int64)


class _Face:
    """``kl_coef`` (β), readable and settable (the rollout collector's ``set_kl_coef`` writes it)."""

    core: TurnTokenCore

    @property
    def kl_coef(self) -> float:
        return self.core.kl_coef

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        self.core.kl_coef = float(value)

    @property
    def tokenizer(self) -> Any:
        return self.core.tokenizer


class TurnTokenEnv(_Face, gym.Env):
    """A multi-turn episode of a string-level turn env (:class:`envs.turns.TurnEnv`), one token per step.

    ## Description
    The episode alternates agent turns and env turns. An agent turn is a run of token actions that ends with an
    id of ``end_of_turn`` (included in the turn's tokens, stripped from its text) or after ``max_turn_tokens``
    tokens; its text goes to ``TurnEnv.step``, and the env's answer is tokenized (no special tokens) and appended
    to the context in the same step. Env tokens are context only: they are never actions, so no loss, entropy or
    KL term ever covers them.

    ## Action Space
    ``Discrete(V)``: the next token id of the agent's turn (V = the reference model's vocabulary).

    ## Observation Space
    ``Dict(input_ids, attention_mask, agent_mask)``, each ``Box(shape=(max_context,), int64)``: the transcript so
    far LEFT padded (pad id on the padding), 1 on its real tokens, and 1 on the positions holding the agent's
    tokens (0 on the env's). Only tokens are appended: each observation extends the previous one.

    ## Starting State
    The TurnEnv's first text (``reset(seed=seed)``; later episodes ``reset(seed=None)``), tokenized.

    ## Rewards
    Every step: ``kl_coef·log π_ref(a_t|s_t)`` (the env's half of the KL shaping, ``info["ref_logprob"]`` for any
    β; the rollout collector adds ``-β·log π_θ``). The step that ends a turn adds the TurnEnv's reward for that
    turn (rewards sit on the last token of the turn that earned them).

    ## Episode End
    Terminated / truncated as the TurnEnv reports at the end of a turn. Also truncated by the context limit: when
    the env's next answer plus one agent token would not fit in ``max_context``, or the context fills mid-turn
    (``info["context_limit"]``); learners bootstrap ``V(final obs)`` there.

    ## Information
    ``ref_logprob`` (float, every step), ``turn_end`` (bool), ``context_limit`` (bool), ``text`` (the whole
    transcript, at the episode's end).

    ## Arguments
    ``env_fn`` (a zero-argument factory of TurnEnvs), ``model`` (the frozen reference: a causal LM or a path),
    ``tokenizer``, ``max_turn_tokens`` (8), ``end_of_turn`` (a one-token string, id(s), or None = EOS),
    ``max_context`` (256), ``kl_coef`` (0.05), ``device`` ("auto"), ``env_suffix`` ("": text appended to every env
    text before it is tokenized, e.g. ``"\\n"`` so that the agent's turn starts a new word), ``chat_template``
    (False; True: each env text is rendered as one user message with the tokenizer's chat template and its generation
    prompt, which are env tokens; pass the template's end-of-turn token as ``end_of_turn``). The vector env takes
    ``num_envs`` besides.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        self.render_mode = render_mode
        self.core = TurnTokenCore(1, **kwargs)
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.core.prefill(self.core.start([0], [seed]), {0})
        self._done = False
        return self._obs(), {}

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.core.observation().items()}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("the episode has ended (or never started): call reset() before step().")
        a = _check_actions(np.asarray([action]), 1, self.core.vocab_size)
        rewards, term, trunc, info = self.core.step(a, np.zeros(1, dtype=bool))
        self._done = bool(term[0] or trunc[0])
        row = {k: v[0] for k, v in info.items() if not k.startswith("_") and info[f"_{k}"][0]}
        return self._obs(), float(rewards[0]), bool(term[0]), bool(trunc[0]), row

    def render(self) -> str | None:
        return self.core.texts()[0] if self.render_mode == "ansi" else None


class TurnTokenVectorEnv(_Face, VectorEnv):
    """``num_envs`` rows of :class:`TurnTokenEnv` (same kwargs, same rewards for the same tokens), stepped together.

    ``reset(seed=s)`` resets row ``i``'s TurnEnv with seed ``s + i`` (as ``SyncVectorEnv``); autoreset is
    Gymnasium's ``NEXT_STEP`` (a row that ended at step t ignores its action at t+1, starts a new episode and
    returns reward 0). Every step prefills the tokens all rows appended (actions, env turns, new episodes' first
    texts) into the reference's KV cache in one batched forward. Info keys are the single env's, as (N,) arrays
    with ``_key`` masks.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["ansi"]}

    def __init__(self, num_envs: int, render_mode: str | None = None, **kwargs: Any) -> None:
        if kwargs.pop("autoreset_mode", AutoresetMode.NEXT_STEP) not in (AutoresetMode.NEXT_STEP, "NextStep"):
            raise ValueError("TurnTokenVectorEnv supports autoreset_mode=NEXT_STEP only (Gymnasium's default).")
        self.render_mode = render_mode
        self.core = TurnTokenCore(num_envs, **kwargs)
        self.num_envs = num_envs
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._started = False

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return (getattr(self, name),) * self.num_envs

    def set_attr(self, name: str, values: Any) -> None:
        values = values[0] if isinstance(values, (list, tuple)) else values
        setattr(self, name, values)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        rows = list(range(self.num_envs))
        self.core.prefill(self.core.start(rows, seeds), set(rows))
        self._autoreset[:] = False
        self._started = True
        return self.core.observation(), {}

    def step(self, actions: Any) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        if not self._started:
            raise RuntimeError("Call reset() before step().")
        actions = _check_actions(actions, self.num_envs, self.core.vocab_size)
        rewards, term, trunc, info = self.core.step(actions, self._autoreset.copy())
        self._autoreset = term | trunc
        return self.core.observation(), rewards, term, trunc, info

    def render(self) -> tuple[str, ...] | None:
        return tuple(self.core.texts()) if self.render_mode == "ansi" else None
