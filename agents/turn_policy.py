"""The LM policy of the multi-turn token envs: env tokens between agent tokens, in the rollout and in the update.

:class:`TurnLMPolicy` is :class:`agents.networks.CausalLMPolicy` for observations that also carry ``agent_mask``
(:class:`envs.turn_env.TurnTokenEnv`). Between two of its steps a row's context may grow by more than the last
action (an env turn was appended), so ``act`` feeds each row exactly the tokens its observation gained since the
previous step (the action, plus any env turn) into a per-row KV cache (:class:`envs.lm.append_cache.AppendLM`),
all rows in one batched forward; the prefix is never re-run. ``evaluate`` runs one teacher-forced pass over each
chunk's last observation (the whole transcript so far) and reads each step's output at the position before the
step's own action: the agent positions of the transcript, counted from its end, locate the steps, whatever env
tokens lie between them. Env positions are never read, so they get no gradient, no entropy and no KL term.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import Tensor

from agents.networks import LM_POLICY_FOR_KEY, CausalLMPolicy, EnvObs, StepBatch
from envs.lm import forward_left_padded
from envs.lm.append_cache import AppendLM

__all__ = ["TurnLMPolicy", "new_tokens", "step_positions"]


def new_tokens(ids: np.ndarray, mask: np.ndarray, cached: np.ndarray, restart: np.ndarray) -> tuple[np.ndarray, ...]:
    """What each row's left-padded context (N, L) gained over its ``cached`` (N,) tokens -> right-padded new ids
    (N, w), their counts (N,) and the rows that restart (``restart``, or a context that did not grow)."""
    L = ids.shape[1]
    real = mask.sum(1).astype(np.int64)  # (N,)
    restart = restart | (real <= cached)
    counts = np.where(restart, real, real - cached)  # (N,)
    cols = np.clip(L - counts[:, None] + np.arange(max(int(counts.max()), 1))[None, :], 0, L - 1)  # (N, w)
    return np.take_along_axis(ids, cols, 1), counts, restart


def step_positions(agent: Tensor, chunk: Tensor, steps_to_end: Tensor) -> Tensor:
    """(B,) position, in its chunk's last observation (agent (C, W) bool), of the output that predicts each step's
    action: the last position for the chunk's last step, else the position before the ``k``-th agent token from
    the end (``k = steps_to_end``): every earlier step's action sits in the transcript as an agent token."""
    C, W = agent.shape
    ar = torch.arange(W, device=agent.device).expand(C, W)
    desc = torch.where(agent, ar, -1).sort(dim=1, descending=True).values  # (C, W) agent positions, last first
    k = steps_to_end.clamp(min=1) - 1  # (B,)
    before = desc[chunk, k.clamp(max=W - 1)] - 1  # (B,)
    return torch.where(steps_to_end == 0, W - 1, before)


class TurnLMPolicy(CausalLMPolicy):
    """A causal LM policy + value head over multi-turn transcripts (see the module docstring)."""

    _turn_decoder: AppendLM | None = None

    def reset_state(self) -> None:
        super().reset_state()
        self._turn_decoder = None

    def act(self, obs: EnvObs, episode_start: np.ndarray) -> tuple[Tensor, Tensor]:
        ids, mask = np.asarray(obs["input_ids"]), np.asarray(obs["attention_mask"])  # (N, L)
        n = ids.shape[0]
        decoder = self._turn_decoder
        if decoder is None or decoder.num_rows != n:
            decoder = self._turn_decoder = AppendLM(self.lm, n, max_len=ids.shape[1],
                                                    autocast_dtype=self.autocast_dtype)
        restart = np.asarray(episode_start, dtype=bool) | ~decoder.started
        chunk, counts, restart = new_tokens(ids, mask, decoder.lengths, restart)
        hidden = decoder.extend(np.arange(n), chunk, counts, restart)  # (N, D)
        with self._autocast():
            logits = self.logits_head.post(self.policy_head(hidden))  # (N, V)
            values = self.value_head(hidden.float()).squeeze(-1)  # (N,)
        return logits.float(), values.float()

    def evaluate(self, batch: StepBatch) -> tuple[Tensor, Tensor]:
        obs = cast(dict[str, Tensor], batch.chunk_obs())
        ids, mask, agent = obs["input_ids"], obs["attention_mask"], obs["agent_mask"].bool()  # (C, L)
        width = int(mask.sum(1).max())
        ids, mask, agent = ids[:, -width:], mask[:, -width:], agent[:, -width:]  # (C, W)
        with self._autocast():
            hidden = forward_left_padded(self.lm, ids, mask)  # (C, W, D)
            h = hidden[batch.chunk, step_positions(agent, batch.chunk, batch.steps_to_end)]  # (B, D)
            logits = self.logits_head.post(self.policy_head(h))  # (B, V)
            values = self.value_head(h.float()).squeeze(-1)  # (B,)
        return logits.float(), values.float()


LM_POLICY_FOR_KEY["agent_mask"] = TurnLMPolicy
