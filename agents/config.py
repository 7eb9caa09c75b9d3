"""The agent's hyperparameters (:class:`AgentConfig`) and the batch it learns from (:class:`Rollout`).

Both are re-exported by :mod:`agents.agent`, where the algorithms that use them are described.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import tyro
from torch import Tensor

from agents.algos import ALGOS, AlgoName, LossAggregation
from agents.history_obs import HistoryObs
from agents.masking import ActionMasks
from agents.networks import Obs
from agents.validate import check_fields


@dataclass(frozen=True)
class AgentConfig:
    """Hyperparameters of the agent (CleanRL names where they exist)."""

    algo: Annotated[AlgoName, tyro.conf.Suppress] = "ppo"  # CLI: runners.train --algo
    gamma: float = 0.99
    gae_lambda: float = 0.95
    learning_rate: float = 2.5e-4
    adam_eps: float = 1e-5
    anneal_lr: bool = True
    update_epochs: int = 4
    """PPO/GRPO epochs over each rollout (REINFORCE and RLOO always use 1)."""
    num_minibatches: int = 4
    micro_batch_size: int | None = None
    """gradient accumulation: evaluate each minibatch in passes of at most this many chunks (text: sequences),
    backpropagating each before the next, so a minibatch that does not fit in memory is split without changing
    the update (None: the whole minibatch in one pass)"""
    norm_adv: bool = True
    """PPO: whiten the advantages (zero mean, unit std); REINFORCE/RLOO: divide their weights by
    their std; GRPO: nothing (its group advantages are already normalised)."""
    norm_adv_scope: Literal["rollout", "minibatch"] = "rollout"
    """statistics of norm_adv: over all learnable steps of the rollout, once (as TRL's classic
    PPOTrainer), or over each minibatch (as CleanRL's ppo.py, Stable-Baselines3 and OpenAI
    Baselines ppo2); reset steps and unfinished Monte-Carlo (REINFORCE/RLOO/GRPO) episodes never
    enter them"""
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    reinforce_return: Literal["episode", "to_go"] = "to_go"
    """REINFORCE and RLOO: whole-episode return G_0 or reward-to-go G_t (RLOO: per-step leave-one-out baseline)"""
    reinforce_baseline: bool = True
    group_eps: float = 1e-4
    """GRPO: ε in (R - mean_g) / (std_g + ε)"""
    scale_rewards: bool | None = None
    """RLOO/GRPO: divide the group advantages by the group's std (None: the algorithm's default, on for GRPO;
    off is Dr. GRPO; see docs/algorithms.md for the bias it adds)"""
    loss_aggregation: LossAggregation | None = None
    """how per-step loss terms are summed: "token_mean" (over the minibatch's learned steps; DAPO, TRL),
    "sequence_mean" (each episode's mean, then the episodes'; the original GRPO) or "constant" (the rollout's
    step count, fixed before the actions; REINFORCE, RLOO, Dr. GRPO); None: the algorithm's default"""
    kl_mode: Literal["reward", "loss"] = "reward"
    """KL to the reference: in the per-token reward (k1), or as the loss term β·kl_estimator (see agents.losses)"""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """kl_mode="loss": k1 = log π_θ/π_ref (gradient 0 in expectation), k2 = ½(log π_θ/π_ref)² (expected gradient
    ∇KL(π_θ‖π_ref)), k3 = π_ref/π_θ - log(π_ref/π_θ) - 1 (unbiased value of KL(π_θ‖π_ref), expected gradient
    ∇KL(π_ref‖π_θ)); see agents.losses.kl_estimate"""
    whiten_rewards: bool = False
    """TRL's whiten_rewards: per rollout, the learning rewards of the valid steps get spread 1 (mean kept)"""
    reward_clip: float | None = None
    """clip every learning reward to [-reward_clip, reward_clip] (after whitening or normalising; None: off)"""
    reward_norm: Literal["off", "scale", "center"] = "off"
    """running reward normalisation over all rollouts so far (agents.reward_scaling.RunningMoments, saved in
    checkpoints): "scale" divides the learning rewards by their running std (SB3's VecNormalize, TRL's
    use_score_scaling), "center" also subtracts the running mean first (TRL's use_score_norm)"""
    temperature: float = 1.0
    """sampling temperature of rollouts and predict; the update evaluates the same tempered distribution"""
    top_k: int = 0
    """sample among the k most likely actions only (0: all); the update evaluates the same kept set"""
    top_p: float = 1.0
    """nucleus sampling: among the most likely actions of total probability top_p (1: all); as top_k"""

    @property
    def sampling(self) -> dict[str, Any]:
        """The sampling controls as keyword arguments of :func:`agents.sampling.sample` (and of
        ``transformers.GenerationConfig``)."""
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}

    @property
    def group_based(self) -> bool:
        """Advantages from the other episodes of a group, no value head (RLOO / GRPO; :data:`ALGOS`)."""
        return ALGOS[self.algo].group_based

    @property
    def monte_carlo(self) -> bool:
        """An episode is learned from once it has ended (REINFORCE / RLOO / GRPO; see agents.carry)."""
        return ALGOS[self.algo].monte_carlo

    @property
    def clipped(self) -> bool:
        """Clipped ratio objective, several epochs, an optimizer step per minibatch (PPO / GRPO)."""
        return ALGOS[self.algo].clipped

    @property
    def aggregation(self) -> LossAggregation:
        """``loss_aggregation``, or the algorithm's default (:data:`ALGOS`)."""
        return self.loss_aggregation or ALGOS[self.algo].loss_aggregation

    @property
    def scales_rewards(self) -> bool:
        """``scale_rewards``, or the algorithm's default (GRPO: on)."""
        return ALGOS[self.algo].scale_rewards if self.scale_rewards is None else self.scale_rewards

    def __post_init__(self) -> None:
        check_fields(self, {
            "gamma": "[0,1]", "gae_lambda": "[0,1]", "learning_rate": ">=0", "adam_eps": ">0",
            "update_epochs": "int>=1", "num_minibatches": "int>=1", "micro_batch_size": "int>=1?",
            "clip_coef": ">0", "ent_coef": ">=0",
            "vf_coef": ">=0", "max_grad_norm": ">0", "target_kl": ">0?", "group_eps": ">0", "temperature": ">0",
            "top_k": "int>=0", "top_p": "(0,1]", "reward_clip": ">0?",
        }, extra={
            f"algo must be one of {tuple(ALGOS)}, got {self.algo!r}": lambda: self.algo in ALGOS,
            f"reinforce_return must be 'episode' or 'to_go', got {self.reinforce_return!r}":
                lambda: self.reinforce_return in ("episode", "to_go"),
            f"kl_mode must be 'reward' or 'loss', got {self.kl_mode!r}": lambda: self.kl_mode in ("reward", "loss"),
            f"norm_adv_scope must be 'rollout' or 'minibatch', got {self.norm_adv_scope!r}":
                lambda: self.norm_adv_scope in ("rollout", "minibatch"),
            "loss_aggregation must be None, 'token_mean', 'sequence_mean' or 'constant', "
            f"got {self.loss_aggregation!r}":
                lambda: self.loss_aggregation in (None, "token_mean", "sequence_mean", "constant"),
            f"kl_estimator must be 'k1', 'k2' or 'k3', got {self.kl_estimator!r}":
                lambda: self.kl_estimator in ("k1", "k2", "k3"),
            f"scale_rewards must be None, True or False, got {self.scale_rewards!r}":
                lambda: self.scale_rewards in (None, True, False),
            f"reward_norm must be 'off', 'scale' or 'center', got {self.reward_norm!r}":
                lambda: self.reward_norm in ("off", "scale", "center"),
            "whiten_rewards and reward_norm both rescale the rewards: choose one (reward_norm='off' or "
            "whiten_rewards=False)": lambda: not (self.whiten_rewards and self.reward_norm != "off"),
        })


@dataclass
class Rollout:
    """``T`` steps of ``N`` vector envs, on the agent's device.

    ``values`` has ``T + 1`` rows: row ``T`` is ``V`` of the observation after the last step.
    ``valid`` is False on reset steps (the step after an episode end, whose action the env
    ignores). ``episode_start`` marks steps whose observation is the first of an episode.
    ``rewards`` are the rewards the agent learns from (already shaped/scaled by the runner).
    """

    obs: Obs | HistoryObs  # (T, N, ...); history networks: one context per chunk (agents.history_obs)
    actions: Tensor  # (T, N) long
    logprobs: Tensor  # (T, N)
    values: Tensor  # (T + 1, N)
    rewards: Tensor  # (T, N)
    terminated: Tensor  # (T, N) bool
    truncated: Tensor  # (T, N) bool
    episode_start: Tensor  # (T, N) bool
    valid: Tensor  # (T, N) bool
    action_masks: ActionMasks | None = None  # allowed actions per step (compact); None = all allowed
    group: Tensor | None = None  # (T, N) long, group id of each step's episode (RLOO/GRPO)
    group_size: int = 0
    """episodes per group (RLOO/GRPO, >= 2): a group is learned once this many of its episodes have finished"""
    ref_logprobs: Tensor | None = None  # (T, N) log π_ref(a_t|s_t) (KL as a loss term)
    kl_coef: float = 0.0  # β of the KL loss term
