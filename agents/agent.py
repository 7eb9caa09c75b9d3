"""The one agent: PPO, REINFORCE, RLOO or GRPO on any policy/value network, for any environment.

The agent sees a :class:`Rollout` — time-major ``(T, N)`` tensors from Gymnasium vector
envs — and a :class:`~agents.networks.PolicyValueNet`. Nothing in here knows whether the
observations are grid cells or tokens.

REINFORCE (``algo="reinforce"``), as the lecture builds it, weights ``∇log π(a_t|s_t)`` by
``Ψ_t``: the full-episode return ``G_0`` (``reinforce_return="episode"``), the reward-to-go
``G_t`` (``"to_go"``), or the reward-to-go minus a learned baseline ``G_t - V(s_t)``
(``reinforce_baseline=True``). It is Monte Carlo: steps whose episode does not finish inside
the rollout are not learned from yet: the agent carries them over and prepends them to the
next rollout, so every step of every episode is learned from exactly once, when its episode
has finished (dropping them instead would bias the gradient toward actions that end episodes
early; see :mod:`agents.carry`). It takes one gradient step per rollout (minibatches only
accumulate gradients), and its loss (policy, value and entropy terms) is a sum over the learned
steps divided by the number of steps the rollout collected (a constant: dividing by the number
of learned steps, which depends on the actions, would bias it again). With ``norm_adv`` its
weights are only rescaled by their std (no mean subtraction, which would be a hidden baseline).

PPO (``algo="ppo"``) uses GAE(γ, λ) advantages, the clipped surrogate on the importance ratio
``ρ = exp(log π_θ - log π_old)``, an optionally clipped value loss, an entropy bonus,
several epochs of shuffled minibatches, advantage normalisation (per rollout or per minibatch:
``norm_adv_scope``), global grad-norm clipping,
optional early stop at ``target_kl`` and optional linear LR annealing. Defaults follow "The
37 implementation details of PPO" (Adam eps 1e-5, clip 0.2, 4 epochs, 4 minibatches, ...).

Group baselines (critic-free; see :mod:`agents.group`). A group is fixed before any return is seen:
the e-th episode of each of the ``k = Rollout.group_size >= 2`` rows of a block (``Rollout.group`` ids
from the env's shared prompts, or from :mod:`agents.group_ids` on CatGrid), and it is learned once all
k episodes have finished; its finished episodes wait in the carry until then (:mod:`agents.carry`), so
every finished episode enters exactly one update, with its own complete group. Each episode ``i`` has
its return ``R_i = G_0`` (discounted, KL-shaped when the KL is in the reward), and every step of the
episode gets the episode's advantage ``A_i``:

- RLOO (``algo="rloo"``): REINFORCE with ``A_i = R_i - mean_{j≠i in group} R_j`` (one gradient
  step per rollout, the loss divided by the rollout's step count like REINFORCE, ``norm_adv``
  rescales by the std only). With ``reinforce_return="to_go"`` (the default) step τ of episode i is
  weighted by its reward-to-go minus the other episodes' reward-to-go at the same step index,
  ``G_{i,τ} - mean_{j≠i} G_{j,τ}`` (0 after an episode's end); ``"episode"`` uses ``G_0`` (TRL's
  sequence-level RLOO; the text preset);
- GRPO (``algo="grpo"``): ``A_i = (R_i - mean_g R) / (std_g R + group_eps)`` (``scale_rewards``; off:
  Dr. GRPO) in PPO's clipped surrogate, several epochs of minibatches, aggregated as
  ``loss_aggregation`` says (token mean by default; see :mod:`agents.algos`).

Neither trains the value head (its loss is off). GRPO's ratio for carried steps is taken against the
policy that sampled them (their stored log-probs), as PPO's always is. An update with nothing to learn
(no group finished yet) still counts (``num_updates``, the LR schedule, resume).

KL to the reference (text envs, β = the env's ``kl_coef``), ``kl_mode``:

- ``"reward"`` (default, TRL's PPO/RLOO): ``r_t = score·1[last] - β(log π_θ - log π_ref)`` folded
  into the return by the rollout collector;
- ``"loss"`` (GRPO's choice): the return is the score alone and the loss gets ``β·KL`` aggregated
  like the other terms, with ``kl_estimator`` k1, k2 or k3 (default, GRPO's) on the current log-probs
  and per-step ``log π_ref`` from the env's ``info["ref_logprob"]`` (any algo may use it). k3's value
  is an unbiased estimate of KL(π_θ‖π_ref) but its expected gradient is ∇KL(π_ref‖π_θ); k2's expected
  gradient is ∇KL(π_θ‖π_ref) (see :func:`agents.losses.kl_estimate`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from agents import batch, losses, parallel
from agents.algos import ALGOS, AlgoSpec
from agents.batch import FlatBatch, split_minibatches
from agents.carry import prepend, unfinished_tail
from agents.config import AgentConfig, Rollout
from agents.estimators import Advantages
from agents.masking import apply_mask
from agents.networks import EnvObs, PolicyValueNet, disable_dropout
from agents.objective import STAT_KEYS, MinibatchTerms, explained_variance, minibatch_loss, normalize
from agents.reward_scaling import RunningMoments, whiten_and_clip
from agents.sampling import sample, sample_processed


class Agent:
    """PPO / REINFORCE / RLOO / GRPO on a :class:`PolicyValueNet` (see the module docstring)."""

    sample = staticmethod(sample)

    def __init__(self, net: PolicyValueNet, config: AgentConfig, total_updates: int | None = None) -> None:
        self.net = disable_dropout(net)  # old and new log-probs must come from the same function
        self.config = config
        fused = net.device.type in ("cpu", "cuda")  # one fused kernel per step (CPU: ~3x faster than the default)
        trainable = [p for p in net.parameters() if p.requires_grad]  # a LoRA policy: adapter + value head only
        self.scaler = grad_scaler(net, trainable)
        """float16 compute (weights or ``autocast_dtype``): the loss is scaled before each backward pass and a step
        whose gradients overflow is skipped (counted in ``skipped_steps``, not a failure); else disabled."""
        self.skipped_steps = 0
        self.optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, eps=config.adam_eps, fused=fused)
        self.total_updates = total_updates
        self.num_updates = 0
        self.reward_moments = RunningMoments() if config.reward_norm != "off" else None
        """reward_norm: the running moments of the learning rewards (saved in checkpoints)"""
        self.carry: Rollout | None = None
        """Monte-Carlo algorithms: steps of unfinished episodes, prepended to the next rollout (saved with
        exact-resume checkpoints)."""
        self.lr_schedule_start = (0, 1.0)
        """(update u0, LR fraction f0): with anneal_lr the LR decays linearly from f0·lr at u0 to 0 at total_updates."""

    @property
    def device(self) -> torch.device:
        return self.net.device

    @property
    def spec(self) -> AlgoSpec:
        """The registry row of the configured algorithm."""
        return ALGOS[self.config.algo]

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def policy_step(self, obs: EnvObs, episode_start: np.ndarray) -> tuple[Tensor, Tensor]:
        """Logits (N, A) and values (N,) for one vector-env observation batch."""
        return self.net.act(obs, episode_start)

    @torch.no_grad()
    def predict(
        self, obs: EnvObs, episode_start: np.ndarray | bool | None = None, deterministic: bool = True,
        action_mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray | int, None]:
        """SB3-style inference: ``(action, None)`` for one observation, ``(actions (N,), None)`` for a batch.

        ``deterministic`` takes the argmax, else samples. Networks with memory (the LM policy's KV cache) continue
        from the previous call unless ``episode_start`` is True for a row (None: every row starts afresh).
        ``action_mask`` (A,) or (N, A), True = allowed (e.g. ``info["action_mask"]``), restricts the choice.
        """
        first: Any = next(iter(obs.values())) if isinstance(obs, dict) else obs
        single = np.ndim(first) == self.net.obs_ndim
        if single:
            obs = cast(EnvObs, {k: np.asarray(v)[None] for k, v in obs.items()} if isinstance(obs, dict)
                       else np.asarray(obs)[None])
            first = np.asarray(first)[None]
        n = len(first)
        start = np.ones(n, dtype=bool) if episode_start is None else np.broadcast_to(episode_start, (n,)).astype(bool)
        logits, _ = self.policy_step(obs, start)
        mask = None if action_mask is None else torch.as_tensor(np.asarray(action_mask, dtype=bool).reshape(n, -1),
                                                                 device=logits.device)
        actions = sample(logits, greedy=deterministic, mask=mask, **self.config.sampling)[0].cpu().numpy()  # (N,)
        return (int(actions[0]) if single else actions), None

    def sample_action(self, logits: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Actions (N,), their log-probs (N,) and the allowed actions (N, A) (None: all) of the configured
        sampling distribution (temperature, top-k, top-p over the env's ``mask``), as rollouts sample."""
        return sample_processed(logits, mask=mask, **self.config.sampling)

    # ------------------------------------------------------------------ learning
    def advantages(self, ro: Rollout) -> Advantages:
        """Advantages Â, value targets, the loss mask (each (T, N)) and statistics of the configured algorithm."""
        return self.spec.estimate(ro, self.config)

    def lr_fraction(self) -> float:
        """The LR multiplier of the next update under linear annealing (see ``lr_schedule_start``)."""
        u0, f0 = self.lr_schedule_start
        total = self.total_updates
        if total is None:
            raise ValueError("lr_fraction needs total_updates (the length of the LR schedule)")
        if (u0, f0) == (0, 1.0):
            return max(1.0 - self.num_updates / total, 0.0)
        return max(f0 * (total - self.num_updates) / max(total - u0, 1), 0.0)

    def _set_lr(self) -> None:
        if self.config.anneal_lr and self.total_updates:
            frac = self.lr_fraction()
            for group in self.optimizer.param_groups:
                group["lr"] = frac * self.config.learning_rate

    def update(self, ro: Rollout) -> dict[str, float]:
        """One learning step on a rollout; returns CleanRL-style loss statistics.

        Data-parallel (``torchrun``, see :mod:`agents.parallel`): each rank passes its own rollout;
        advantage statistics, minibatch counts, gradients (weighted by each rank's learnable steps,
        or by its rollout steps for REINFORCE), the early stop at ``target_kl`` and the returned
        statistics are all global, so N ranks with E envs each take the step one process with N·E
        envs would. Rollouts must be consecutive (one collector): Monte-Carlo algorithms learn from
        the episodes that finish in ``ro``, including their steps carried over from earlier rollouts.
        """
        c, spec = self.config, self.spec
        self._set_lr()
        rollout_steps = ro.valid.numel()  # T * N of the new rollout: the "constant" loss denominator
        ro = self._scaled_rewards(ro)  # of the new steps (carried ones were, with theirs)
        ro, est = self._learnable(ro)
        fb = FlatBatch.from_rollout(ro, est)
        learn_chunks = fb.learn_chunks()
        # the ranks' learnable chunks in rank order, one global list (ranks short of chunks get empty minibatches)
        counts = parallel.rank_counts(learn_chunks.numel(), self.device).tolist()
        if sum(counts) == 0:  # e.g. every group still waiting for a member: the update still counts (resume, LR)
            self.num_updates += 1
            return {"skipped": 1.0, **self._global_stats(est.stats)}
        kl_coef = self._kl_loss_coef(ro)
        per_minibatch = self._normalize_advantages(fb)
        denom = self._denominator(fb, learn_chunks, rollout_steps)
        split = (sum(counts[:parallel.rank()]), sum(counts), min(c.num_minibatches, sum(counts)))
        history: list[Tensor] = []  # per epoch: (groups, 1 + len(STAT_KEYS)) global [n, means...]
        self.net.train()
        for _ in range(c.update_epochs if spec.clipped else 1):
            history.append(self._epoch(fb, split_minibatches(learn_chunks, *split), denom, per_minibatch, kl_coef))
            if c.target_kl is not None and spec.clipped and self._mean_stat(history[-1], "approx_kl") > c.target_kl:
                break
        self.num_updates += 1
        self.net.eval()
        return self._summary(history, fb, est)

    def _scaled_rewards(self, ro: Rollout) -> Rollout:
        """``ro`` with its learning rewards normalised (running moments), whitened and/or clipped, as configured."""
        c = self.config
        if self.reward_moments is not None:
            rewards = self.reward_moments.normalize(ro.rewards, ro.valid, c.reward_norm == "center", c.reward_clip)
        elif c.whiten_rewards or c.reward_clip is not None:
            rewards = whiten_and_clip(ro.rewards, ro.valid, c.whiten_rewards, c.reward_clip)
        else:
            return ro
        return dataclasses.replace(ro, rewards=rewards)

    def _learnable(self, ro: Rollout) -> tuple[Rollout, Advantages]:
        """The rollout to learn from (Monte-Carlo: the carry prepended) and its advantages; updates the carry."""
        if not self.spec.monte_carlo:
            return ro, self.spec.estimate(ro, self.config)
        ro = prepend(self.carry, ro)  # learn each episode (group) once it has ended, carried steps included
        est = self.spec.estimate(ro, self.config)
        self.carry = unfinished_tail(ro, est.carry)
        return ro, est

    def _denominator(self, fb: FlatBatch, learn_chunks: Tensor, rollout_steps: int) -> Tensor | float | None:
        """What ``loss_aggregation`` divides by: one-step algorithms the whole loss (rollout steps, learned steps
        or learned episodes), clipped ones each minibatch's ("constant": rollout steps / minibatches; else None,
        the minibatch's own count)."""
        how = self.config.aggregation
        if self.spec.clipped:
            return rollout_steps / self.config.num_minibatches if how == "constant" else None
        if how == "constant":
            return rollout_steps
        return fb.mask.sum() if how == "token_mean" else torch.tensor(learn_chunks.numel(), device=self.device)

    def _kl_loss_coef(self, ro: Rollout) -> float | None:
        """β of the k3 loss term (``kl_mode="loss"`` with β > 0), else None."""
        if not (self.config.kl_mode == "loss" and ro.kl_coef > 0):
            return None
        if ro.ref_logprobs is None:
            raise ValueError("kl_mode='loss' needs Rollout.ref_logprobs (the env's info['ref_logprob'])")
        return ro.kl_coef

    def _normalize_advantages(self, fb: FlatBatch) -> bool:
        """``norm_adv`` over the whole rollout (in place); True when it is to be done per minibatch instead."""
        how = self.spec.normalize
        if not self.config.norm_adv or how == "none":
            return False
        if self.config.norm_adv_scope == "minibatch":
            return True
        fb.adv[fb.mask] = normalize(fb.adv[fb.mask], center=how == "whiten")
        return False

    def _epoch(
        self, fb: FlatBatch, minibatches: list[Tensor], denom: Tensor | float | None, per_minibatch: bool,
        kl_coef: float | None,
    ) -> Tensor:
        """One pass over chunk-aligned minibatches; returns their global ``[n, means...]`` rows."""
        clipped = self.spec.clipped
        if not clipped:
            self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(len(minibatches), 2 + len(STAT_KEYS), dtype=torch.float64, device=self.device)
        for g, group in enumerate(minibatches):
            if clipped:
                self.optimizer.zero_grad(set_to_none=True)
            in_group = torch.isin(fb.chunk, group)  # (S,) all False for an empty group
            adv = None
            if per_minibatch:  # before the branch: every rank joins the statistics' collective
                adv = normalize(fb.adv[in_group & fb.mask], center=self.spec.normalize == "whiten")
            # a rank without steps in this minibatch: no gradient, but a constant denominator still counts
            weight: Tensor | float = torch.zeros((), device=self.device) if denom is None else denom
            if group.numel() > 0:
                n_group, parts, weight = self._minibatch(fb, in_group, adv, denom, kl_coef)
                # the parts are means over steps, or over sequences (sequence_mean: weighted by their count)
                w = torch.as_tensor(weight if self.config.aggregation == "sequence_mean" else n_group,
                                    device=sums.device)
                sums[g] = torch.cat([n_group[None], w[None], w * parts])
            if clipped:
                self._step(weight)
        if not clipped:
            assert denom is not None
            self._step(denom)
        parallel.all_reduce(sums)  # one collective per epoch: global per-minibatch means
        return torch.cat([sums[:, :1], sums[:, 2:] / sums[:, 1:2]], dim=1)

    def _minibatch(
        self, fb: FlatBatch, in_group: Tensor, adv: Tensor | None, denom: Tensor | float | None,
        kl_coef: float | None,
    ) -> tuple[Tensor, Tensor, Tensor | float]:
        """Forward, loss and backward of one minibatch (in micro-batches of ``micro_batch_size`` chunks, their
        gradients accumulated); returns its learned-step count, loss parts and the weight of its gradient among
        the ranks' (what its loss was divided by)."""
        idx = torch.nonzero(in_group).squeeze(1)  # (B,) steps, chunk-contiguous
        m = fb.mask[idx]  # (B,)
        n_group = m.sum()
        weights, scale, weight = self._aggregation(fb.chunk[idx][m], n_group, denom)
        adv = fb.adv[idx][m] if adv is None else adv  # (n,) over the learned steps
        size = self.config.micro_batch_size
        if size is None:
            return n_group, self._backward(fb, idx, adv, weights, 1.0, scale, kl_coef), weight
        if weights is None:  # the mean over the minibatch as a sum over its micro-batches
            weights = torch.full_like(adv, 1.0) / n_group
        pos = torch.cumsum(m, 0) - 1  # (B,) index of each learned step among the minibatch's
        parts = torch.zeros(len(STAT_KEYS), device=self.device)
        for a, b in batch.micro_slices(fb.chunk[idx], size):
            j = pos[a:b][m[a:b]]  # (n_j,) the micro-batch's learned steps
            parts = parts + self._backward(fb, idx[a:b], adv[j], weights[j], j.numel() / n_group, scale, kl_coef)
        return n_group, parts, weight

    def _backward(
        self, fb: FlatBatch, idx: Tensor, adv: Tensor, weights: Tensor | None, share: Tensor | float,
        scale: Tensor | float, kl_coef: float | None,
    ) -> Tensor:
        """Forward, loss and backward of the steps ``idx`` (whole chunks); returns the loss parts."""
        logits, values = self.net.evaluate(batch.make_batch(fb.obs, fb.actions, fb.chunk, idx))  # (B, A), (B,)
        if self.config.temperature != 1.0:  # the tempered distribution the rollout sampled from
            logits = logits.float() / self.config.temperature
        if fb.action_table is not None and fb.action_rows is not None:  # the masked distribution sampled from
            logits = apply_mask(logits.float(), fb.action_table[fb.action_rows[idx]])
        m = fb.mask[idx]
        dist = torch.distributions.Categorical(logits=logits[m])
        logprob = dist.log_prob(fb.actions[idx][m])
        terms = MinibatchTerms(
            logprob=logprob, old_logprob=fb.old_logprob[idx][m], adv=adv,
            values=values[m], old_values=fb.old_values[idx][m], targets=fb.targets[idx][m],
            entropy=losses.aggregate(dist.entropy(), weights), weights=weights, share=share,
            ref_logprob=None if kl_coef is None or fb.ref_logprob is None else fb.ref_logprob[idx][m],
        )
        loss, parts = minibatch_loss(self.spec, self.config, terms, kl_coef or 0.0)
        self.scaler.scale(loss * scale).backward()  # unchanged unless float16 (see grad_scaler)
        return parts

    def _aggregation(
        self, chunk: Tensor, n_group: Tensor, denom: Tensor | float | None
    ) -> tuple[Tensor | None, Tensor | float, Tensor | float]:
        """``loss_aggregation`` of one minibatch: per-step weights (None: the mean), the factor of its mean loss
        and the weight of its gradient among the ranks' (see :meth:`_denominator`)."""
        if self.config.aggregation == "sequence_mean":  # each episode's mean, then the episodes'
            n_seq = torch.unique(chunk).numel() if denom is None else denom
            return losses.sequence_weights(chunk, n_seq), 1.0, n_seq
        if denom is None:  # clipped token mean: the minibatch's mean
            return None, 1.0, n_group
        return None, n_group / denom, denom  # Σ over the steps / denom

    def _step(self, weight: Tensor | float) -> None:
        """Combine gradients over ranks (weighted by their steps), clip the global norm, step Adam (float16: the
        unscaled gradients, the step skipped when they overflowed; every rank sees the same combined ones)."""
        parallel.all_reduce_grads(self.net.parameters(), weight=weight)
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.max_grad_norm)
        if not self.scaler.is_enabled():
            self.optimizer.step()
            return
        before = self.scaler.get_scale()  # one host sync per optimizer step
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.skipped_steps += int(self.scaler.get_scale() < before)  # an overflow halves the scale

    def _global_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """The estimator's counts summed over all ranks."""
        if not stats:
            return {}
        return dict(zip(stats, parallel.global_sum(*stats.values(), device=self.device).tolist()))

    @staticmethod
    def _mean_stat(epoch: Tensor, key: str) -> float:
        """Unweighted mean over the minibatches of one epoch's statistic ``key`` (the early-stop rule)."""
        return epoch[:, 1 + STAT_KEYS.index(key)].mean().item()

    def _summary(self, history: list[Tensor], fb: FlatBatch, est: Advantages) -> dict[str, float]:
        """Step-weighted means of the minibatch statistics (independent of the split), plus the algorithm's own."""
        hist = torch.cat(history).cpu().numpy()  # (epochs * groups, 1 + stats): [n, means...]
        out = {k: float(np.average(hist[:, 1 + i], weights=hist[:, 0])) for i, k in enumerate(STAT_KEYS)
               if np.isfinite(hist[:, 1 + i]).all()}
        if self.spec.group_based:
            out.update(self._global_stats(est.stats))
        else:
            out["explained_variance"] = explained_variance(fb.old_values[fb.mask], fb.targets[fb.mask])
        out["learning_rate"] = self.optimizer.param_groups[0]["lr"]
        if self.scaler.is_enabled():
            out |= {"grad_scale": self.scaler.get_scale(), "skipped_steps": float(self.skipped_steps)}
        return out


def grad_scaler(net: PolicyValueNet, trainable: list[torch.nn.Parameter]) -> torch.amp.GradScaler:
    """A gradient scaler, enabled when ``net`` computes in float16 (float16 weights, e.g. a LoRA adapter's base, or
    ``autocast_dtype``); float16 trainable weights are refused (their gradients cannot be unscaled)."""
    if any(p.dtype == torch.float16 for p in trainable):
        raise ValueError("float16 trainable weights: a gradient scaler cannot unscale float16 gradients. Train a "
                         "float32 LoRA adapter over the float16 base (--lora-r), float32 weights under "
                         "--autocast-dtype float16, or bfloat16 weights.")
    fp16 = getattr(net, "autocast_dtype", None) == torch.float16 or any(p.dtype == torch.float16 for p in
                                                                        net.parameters())
    return torch.amp.GradScaler(net.device.type, enabled=fp16)
