"""TRL's complete per-token reward for agents that are not this project's (SB3, TorchRL, a custom loop).

``TextGen-IMDB-v0`` pays the env's half of the KL-shaped reward, ``β·log π_ref(a_t|s_t)`` (+ the score on the
last token); this project's rollout collector adds the other half, ``−β·log π_θ(a_t|s_t)``, from its sampling
log-prob (the contract: :class:`envs.textgen.TextGenEnv`, section Rewards). Any other agent gets only the env's
half, which pushes toward the reference's most likely tokens instead of penalising the divergence. The wrappers
here add the missing half, so every agent optimises ``score·1[last] − β(log π_θ − log π_ref)``:

- :class:`CompleteKLReward` (one env) and :class:`CompleteKLRewardVector` (a vector env): the agent reports the
  log-prob it sampled its action with, ``env.step(action, logprob=...)`` (``logprobs=`` for the vector env). The
  agent may live anywhere (another process, another framework): only a number crosses.
- :class:`LMPolicyKLReward` (one env): for an agent whose policy is a Hugging Face causal LM in this process; it
  computes ``log π_θ(a_t|s_t)`` itself with its own KV cache (:class:`envs.lm.IncrementalLM`), so
  ``env.step(action)`` alone returns the complete reward.

All add ``info["logprob"]`` (log π_θ of the action, 0 on steps without one) and ``info["kl"]``
(``log π_θ − log π_ref`` of the step). β is the env's ``kl_coef``, read at every step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from transformers import PreTrainedModel

from envs.lm import IncrementalLM

__all__ = ["CompleteKLReward", "CompleteKLRewardVector", "LMPolicyKLReward"]


def _kl_coef_of(env: Any) -> float:
    """β of a KL-shaped env (reached through its wrappers); a clear error for an env without KL shaping or with
    the one-pass reference (which pays β·log π_ref on the last step only, not per token)."""
    if getattr(env.unwrapped, "ref_mode", "per_step") != "per_step":
        raise ValueError("the complete KL reward wrappers need the per-token reference: build the env with "
                         "ref_mode='per_step' (gym.make's default), not 'one_pass'.")
    try:
        if isinstance(env, gym.vector.VectorEnv):  # vector wrappers forward no attributes: ask the base env
            return float(env.unwrapped.kl_coef)  # type: ignore[attr-defined]
        return float(env.get_wrapper_attr("kl_coef"))
    except AttributeError:
        raise ValueError(
            f"{env} has no kl_coef: the complete KL reward wrappers are for KL-shaped envs such as "
            "TextGen-IMDB-v0 (other envs need no extra reward term)."
        ) from None


def _as_float64(logprob: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``logprob`` (float, numpy or torch) as a float64 array of ``shape``, finite and <= 0 (a log-probability)."""
    if isinstance(logprob, torch.Tensor):
        logprob = logprob.detach().cpu().numpy()
    value = np.asarray(logprob, dtype=np.float64).reshape(shape) if np.size(logprob) == np.prod(shape) else None
    if value is None:
        raise ValueError(f"{name} must have shape {shape} (one log-prob per action), got {np.shape(logprob)}.")
    if not np.all(np.isfinite(value)) or np.any(value > 1e-6):
        raise ValueError(
            f"{name} must be finite log-probabilities (<= 0) of the sampled actions, got {value.tolist()}; "
            "pass log π_θ(a_t|s_t) of the action the agent sampled (e.g. dist.log_prob(action))."
        )
    return value


class CompleteKLReward(gym.Wrapper):
    """One KL-shaped env (``gym.make("TextGen-IMDB-v0", ...)``) with TRL's complete per-token reward.

    ``step(action, logprob=lp)``, with ``lp = log π_θ(a_t|s_t)`` the log-prob the agent sampled ``action`` with
    (from the masked distribution when ``info["action_mask"]`` masks tokens), returns
    ``r_t = score·1[last] − β(lp − log π_ref(a_t|s_t))``: the env's reward minus ``β·lp``. ``logprob`` may be
    omitted only when β = 0 (the reward is then the score alone). Adds ``info["logprob"]`` and ``info["kl"]``.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        _kl_coef_of(env)

    @property
    def kl_coef(self) -> float:
        """β, the env's ``kl_coef`` (assignable: it sets the env's)."""
        return _kl_coef_of(self.env)

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        self.env.set_wrapper_attr("kl_coef", value)

    def step(self, action: Any, logprob: Any = None) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        beta = self.kl_coef
        if logprob is None and beta > 0:
            raise ValueError(
                f"step(action) without logprob= on a KL-shaped env (kl_coef={beta}): pass logprob=log π_θ(a_t|s_t) "
                "of the sampled action (or use LMPolicyKLReward, which computes it from an HF policy)."
            )
        lp = 0.0 if logprob is None else float(_as_float64(logprob, (), "logprob"))
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "logprob": lp, "kl": lp - float(info["ref_logprob"])}
        return obs, float(reward) - beta * lp, terminated, truncated, info


class CompleteKLRewardVector(gym.vector.VectorWrapper):
    """A KL-shaped vector env (``gym.make_vec("TextGen-IMDB-v0", ...)``) with TRL's complete per-token reward.

    ``step(actions, logprobs=lp)`` with ``lp`` (N,) the agent's sampling log-probs: every row that took an action
    (``info["_ref_logprob"]``; not the reset step of ``NEXT_STEP`` autoreset, whose action the env ignores) gets
    ``−β·lp`` added to the env's reward. ``info["logprob"]`` / ``info["kl"]`` (N,) carry ``_logprob`` / ``_kl``
    masks. ``logprobs`` may be omitted only when β = 0.
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        _kl_coef_of(env)

    @property
    def kl_coef(self) -> float:
        return _kl_coef_of(self.env)

    def step(self, actions: Any, logprobs: Any = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        beta, n = self.kl_coef, self.num_envs
        if logprobs is None and beta > 0:
            raise ValueError(
                f"step(actions) without logprobs= on a KL-shaped env (kl_coef={beta}): pass logprobs=log π_θ(a|s) "
                f"of the sampled actions, shape ({n},)."
            )
        lp = np.zeros(n) if logprobs is None else _as_float64(logprobs, (n,), "logprobs")  # (N,)
        obs, reward, terminated, truncated, info = self.env.step(actions)
        acted = np.asarray(info["_ref_logprob"], dtype=bool)  # (N,) rows whose action was applied
        lp = np.where(acted, lp, 0.0)
        info = {**info, "logprob": lp, "_logprob": acted.copy(),
                "kl": np.where(acted, lp - np.asarray(info["ref_logprob"], dtype=np.float64), 0.0),
                "_kl": acted.copy()}
        return obs, np.asarray(reward, dtype=np.float64) - beta * lp, terminated, truncated, info


class LMPolicyKLReward(CompleteKLReward):
    """:class:`CompleteKLReward` whose ``log π_θ`` comes from ``policy``, a Hugging Face causal LM in this process.

    ``step(action)`` computes ``log π_θ(a_t|s_t)`` from ``policy`` at the current observation (renormalised over
    ``info["action_mask"]``, as the env does for the reference) with its own KV cache: one cached decoding step
    per env step, a prefill per episode. ``logprob(action)`` returns that number before stepping (e.g. for the
    agent's own bookkeeping). After changing ``policy``'s weights in the middle of an episode call
    :meth:`policy_changed` (the cache was computed with the old weights; it is rebuilt at every reset anyway).
    The policy must share the env's tokenizer (its output layer has the env's vocabulary size).
    """

    def __init__(self, env: gym.Env, policy: PreTrainedModel) -> None:
        super().__init__(env)
        vocab = int(policy.get_output_embeddings().weight.shape[0])
        n_actions = int(env.action_space.n) if isinstance(env.action_space, gym.spaces.Discrete) else -1
        if vocab != n_actions:
            raise ValueError(
                f"the policy's output layer has {vocab} tokens but the env's action space has {n_actions}: "
                "use a policy over the env's tokenizer (e.g. the env's model=)."
            )
        seq_len = int(env.observation_space["input_ids"].shape[0])  # type: ignore[index]
        self.policy = policy
        self._decoder = IncrementalLM(policy, 1, max_len=seq_len)
        self._hidden: torch.Tensor | None = None  # (1, D) policy state at the current observation
        self._obs: dict[str, np.ndarray] | None = None
        self._allowed: np.ndarray | None = None  # (V,) action mask of the current observation

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._obs, self._allowed = obs, info.get("action_mask")
        self.policy_changed()
        return obs, info

    def policy_changed(self) -> None:
        """Rebuild the policy's cache from the current observation (after its weights changed)."""
        if self._obs is None:
            raise RuntimeError("reset() the env first.")
        self._hidden = self._decoder.step(None, None, self._obs["input_ids"][None], self._obs["attention_mask"][None])

    def logprob(self, action: int) -> float:
        """``log π_θ(action | current observation)``, from the masked distribution."""
        if self._hidden is None:
            raise RuntimeError("reset() the env first.")
        with torch.no_grad():
            logits = self._decoder.head(self._hidden).float()[0]  # (V,)
            if self._allowed is not None:
                allowed = torch.as_tensor(np.asarray(self._allowed, dtype=bool), device=logits.device)
                logits = logits.masked_fill(~allowed, float("-inf"))
            return float(torch.log_softmax(logits.double(), -1)[int(action)])

    def step(self, action: Any, logprob: Any = None) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if logprob is not None:
            raise ValueError("LMPolicyKLReward computes logprob from its policy; use CompleteKLReward to pass it.")
        lp = self.logprob(int(action))
        obs, reward, terminated, truncated, info = super().step(action, logprob=lp)
        self._obs, self._allowed = obs, info.get("action_mask")
        if terminated or truncated:
            self._hidden = None
        else:
            token = torch.tensor([int(action)], device=self._decoder.device)
            self._hidden = self._decoder.step(token, np.zeros(1, dtype=bool), obs["input_ids"][None],
                                              obs["attention_mask"][None])
        return obs, reward, terminated, truncated, info
