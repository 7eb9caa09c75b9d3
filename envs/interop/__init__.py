"""Using the envs from other libraries (stable-baselines3, sb3-contrib, TorchRL, custom loops).

- :class:`CompleteKLReward` / :class:`CompleteKLRewardVector`: TRL's complete per-token reward for any agent
  (``step(action, logprob=...)`` adds the agent's ``−β·log π_θ(a_t|s_t)`` to the env's half).
- :class:`LMPolicyKLReward`: the same for an agent whose policy is a Hugging Face causal LM in this process
  (it computes ``log π_θ`` itself, with its own KV cache).
- :mod:`envs.interop.sb3` (needs stable-baselines3): :class:`envs.interop.sb3.SB3VecEnv`, a native vector env
  as an SB3 ``VecEnv``. It is not imported here, so ``import envs.interop`` needs no optional dependency.

See docs/interop.md.
"""

from envs.interop.kl_reward import CompleteKLReward, CompleteKLRewardVector, LMPolicyKLReward

__all__ = ["CompleteKLReward", "CompleteKLRewardVector", "LMPolicyKLReward"]
