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

Group baselines (critic-free; see :mod:`agents.group`). Episodes come in groups that start from
the same state (``Rollout.group`` ids: rows of a prompt group in the text env, rows ``i // k``
on CatGrid, whose every episode starts from the same cell). Each complete episode ``i`` of the
rollout has its return ``R_i = G_0`` (discounted, KL-shaped when the KL is in the reward), and
every step of the episode gets the episode's advantage ``A_i``:

- RLOO (``algo="rloo"``): REINFORCE with ``A_i = R_i - mean_{j≠i in group} R_j`` (one gradient
  step per rollout, ``norm_adv`` rescales by the std only, like REINFORCE). With
  ``reinforce_return="to_go"`` (the default, as for REINFORCE) step τ of episode i is weighted by
  its reward-to-go minus the other episodes' reward-to-go at the same step index,
  ``G_{i,τ} - mean_{j≠i} G_{j,τ}`` (0 after an episode's end); ``"episode"`` uses ``G_0`` (TRL's
  sequence-level RLOO; the text preset);
- GRPO (``algo="grpo"``): ``A_i = (R_i - mean_g R) / (std_g R + group_eps)`` in PPO's clipped
  surrogate, several epochs of minibatches (no further normalisation), token-level mean.

Neither trains the value head (its loss is off). An episode alone in its group in the batch has
no baseline: it is skipped (left out of the loss), never NaN. Like REINFORCE, both learn from an
episode once it has ended: the steps of episodes still running at the end of a rollout are carried
into the next one (:mod:`agents.carry`), so episodes that cross a rollout boundary are not dropped
(dropping them would favour short episodes). GRPO's ratio for carried steps is taken against the
policy that sampled them (their stored log-probs), as PPO's always is.

KL to the reference (text envs, β = the env's ``kl_coef``), ``kl_mode``:

- ``"reward"`` (default, TRL's PPO/RLOO): ``r_t = score·1[last] - β(log π_θ - log π_ref)`` folded
  into the return by the rollout collector;
- ``"loss"`` (GRPO's choice): the return is the score alone and the loss gets
  ``β·mean_t k3_t`` with the unbiased, always-positive estimator of KL(π_θ || π_ref)
  ``k3 = exp(log π_ref - log π_θ) - (log π_ref - log π_θ) - 1`` on the current log-probs, with
  per-step ``log π_ref`` from the env's ``info["ref_logprob"]`` (any algo may use it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from agents import losses
from agents import parallel as distributed
from agents.carry import prepend, unfinished_tail
from agents.config import AgentConfig, Rollout, algo_names  # noqa: F401  (re-exported: agents.agent.AgentConfig)
from agents.group import grpo_advantages, rloo_advantages
from agents.masking import apply_mask
from agents.networks import Obs, PolicyValueNet, StepBatch, disable_dropout
from agents.returns import complete_episode_mask, episode_returns, gae, rewards_to_go


def _index_obs(obs: Obs, idx: Tensor) -> Obs:
    if isinstance(obs, dict):
        return {k: _index_obs(v, idx) for k, v in obs.items()}
    return obs[idx]


def _flatten_obs(obs: Obs) -> Obs:
    """(T, N, ...) → (N*T, ...) in column-major order (env column first, then time)."""
    if isinstance(obs, dict):
        return {k: _flatten_obs(v) for k, v in obs.items()}
    return obs.transpose(0, 1).reshape(-1, *obs.shape[2:])


def chunk_ids(episode_start: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Chunk index of every step, flattened column-major ((N*T,) int64).

    A chunk is a maximal run of consecutive steps of one env column inside one episode:
    a new chunk begins at ``t = 0``, at an episode start, and at any change of ``valid``.
    """
    T, N = episode_start.shape
    new = np.zeros((N, T), dtype=bool)
    new[:, 0] = True
    v = valid.T  # (N, T)
    new[:, 1:] = episode_start.T[:, 1:] | (v[:, 1:] != v[:, :-1])
    return np.cumsum(new.reshape(-1)) - 1


class Agent:
    """PPO / REINFORCE / RLOO / GRPO on a :class:`PolicyValueNet` (see the module docstring)."""

    def __init__(self, net: PolicyValueNet, config: AgentConfig, total_updates: int | None = None) -> None:
        self.net = disable_dropout(net)  # old and new log-probs must come from the same function
        self.config = config
        fused = net.device.type in ("cpu", "cuda")  # one fused kernel per step (CPU: ~3x faster than the default)
        self.optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate, eps=config.adam_eps, fused=fused)
        self.total_updates = total_updates
        self.num_updates = 0
        self.carry: Rollout | None = None
        """REINFORCE: steps of unfinished episodes, prepended to the next rollout (saved with exact-resume checkpoints)."""
        self.lr_schedule_start = (0, 1.0)
        """(update u0, LR fraction f0): with anneal_lr the LR decays linearly from f0·lr at u0 to 0 at total_updates."""

    @property
    def device(self) -> torch.device:
        return self.net.device

    # ------------------------------------------------------------------ acting
    @staticmethod
    def sample(
        logits: Tensor, greedy: bool = False, mask: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample (or argmax) actions from logits (N, A); returns actions (N,) and log π (N,).

        With ``mask`` (N, A) bool (True = allowed) both come from the masked distribution
        (:func:`agents.masking.apply_mask`), the one :meth:`update` evaluates.

        Multinomial sampling at temperature 1 by inverse CDF in float64: one float64 uniform per
        row (from ``generator``) and a binary search in the float64 cumulative sum of
        ``exp(log π)``, where ``log π`` is the float32 log-softmax that is returned. Every action
        is drawn with its float32 softmax probability to double precision, including tail tokens
        far below float32 resolution of the cumulative sum (a float32 CDF at vocab 50k is off
        by total variation ~3e-4 and never draws them); actions of probability 0 are never
        drawn. Much faster than ``Categorical.sample`` at LM vocabulary sizes
        (``benchmarks/sampling_speed.py``).
        """
        logp = torch.log_softmax(apply_mask(logits.float(), mask), dim=-1)  # (N, A)
        if greedy:
            actions = logp.argmax(-1)
        else:
            cdf = logp.exp().double().cumsum_(-1)  # (N, A): float32 probabilities, float64 running sum
            total = cdf[:, -1:]  # (N, 1), 1 up to float32 rounding of the softmax
            u = torch.rand(cdf.shape[0], 1, device=cdf.device, dtype=torch.float64, generator=generator) * total
            u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total, even after rounding
            actions = torch.searchsorted(cdf, u, right=True).squeeze(1)  # (N,) first action with cdf > u
            if mask is not None:  # zero-probability actions have empty intervals; kept as a guard
                actions = torch.where(mask.gather(1, actions[:, None]).squeeze(1), actions, logp.argmax(-1))
        return actions, logp.gather(1, actions.unsqueeze(1)).squeeze(1)

    @torch.no_grad()
    def policy_step(self, obs: Any, episode_start: np.ndarray) -> tuple[Tensor, Tensor]:
        """Logits (N, A) and values (N,) for one vector-env observation batch."""
        return self.net.act(obs, episode_start)

    @torch.no_grad()
    def predict(
        self, obs: Any, episode_start: np.ndarray | bool | None = None, deterministic: bool = True,
        action_mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray | int, None]:
        """SB3-style inference: ``(action, None)`` for one observation, ``(actions (N,), None)`` for a batch.

        ``deterministic`` takes the argmax, else samples. Networks with memory (the LM policy's KV cache) continue
        from the previous call unless ``episode_start`` is True for a row (None: every row starts afresh).
        ``action_mask`` (A,) or (N, A), True = allowed (e.g. ``info["action_mask"]``), restricts the choice.
        """
        first = next(iter(obs.values())) if isinstance(obs, dict) else obs
        single = np.ndim(first) == self.net.obs_ndim
        if single:
            obs = {k: np.asarray(v)[None] for k, v in obs.items()} if isinstance(obs, dict) else np.asarray(obs)[None]
            first = np.asarray(first)[None]
        n = len(first)
        start = np.ones(n, dtype=bool) if episode_start is None else np.broadcast_to(episode_start, (n,)).astype(bool)
        logits, _ = self.policy_step(obs, start)
        mask = None if action_mask is None else torch.as_tensor(np.asarray(action_mask, dtype=bool).reshape(n, -1),
                                                                 device=logits.device)
        actions = Agent.sample(logits, greedy=deterministic, mask=mask)[0].cpu().numpy()  # (N,)
        return (int(actions[0]) if single else actions), None

    # ------------------------------------------------------------------ learning
    def advantages(self, ro: Rollout) -> tuple[Tensor, Tensor, Tensor]:
        """Advantages Â, value targets and the loss mask, each (T, N)."""
        c = self.config
        if c.algo == "ppo":
            adv, targets = gae(ro.rewards, ro.values, ro.terminated, ro.truncated, c.gamma, c.gae_lambda)
            return adv, targets, ro.valid
        if c.group_based:
            return self.group_advantages(ro)
        if c.reinforce_return == "episode":
            ret = episode_returns(ro.rewards, ro.terminated, ro.truncated, ro.episode_start, c.gamma)
        else:
            ret = rewards_to_go(ro.rewards, ro.terminated, ro.truncated, c.gamma)
        mask = ro.valid & complete_episode_mask(
            ro.terminated, ro.truncated, ro.episode_start, need_start=c.reinforce_return == "episode"
        )
        adv = ret - ro.values[:-1] if c.reinforce_baseline else ret
        return adv, ret, mask

    def group_advantages(self, ro: Rollout) -> tuple[Tensor, Tensor, Tensor]:
        """RLOO/GRPO: each complete episode's advantage from its group, on all its steps; (T, N) each.

        Returns the advantages, the episode returns ``G_0`` (as targets, for logging) and the mask of
        steps of complete episodes that have at least one other episode of their group in the rollout.
        """
        c = self.config
        if ro.group is None:
            raise ValueError(f"algo={c.algo!r} needs Rollout.group (group ids); collect with RolloutCollector")
        ret = episode_returns(ro.rewards, ro.terminated, ro.truncated, ro.episode_start, c.gamma)  # (T, N)
        mask = ro.valid & complete_episode_mask(ro.terminated, ro.truncated, ro.episode_start, need_start=True)
        flat = lambda x: x.transpose(0, 1).reshape(-1)  # noqa: E731  (T, N) -> (N*T,) column-major
        start = ro.episode_start.clone()
        start[0] = True
        eid = torch.cumsum(flat(start).long(), 0) - 1  # (N*T,) episode index of every step
        first = torch.nonzero(flat(start) & flat(mask)).squeeze(1)  # (E,) first steps of complete episodes
        n_ep = int(eid[-1].item()) + 1
        unflat = lambda x: x.view(ret.shape[1], ret.shape[0]).transpose(0, 1)  # noqa: E731  (N*T,) -> (T, N)
        if c.algo == "rloo" and c.reinforce_return == "to_go":  # per-step baseline mean_{j≠i} G_{j,τ}
            pos = torch.arange(eid.numel(), device=eid.device)
            first_pos = torch.zeros(n_ep, dtype=torch.long, device=eid.device).index_copy_(0, eid[first], first)
            tau = pos - first_pos[eid]  # (N*T,) step index inside the episode (valid where mask)
            steps = torch.nonzero(flat(mask)).squeeze(1)
            row = torch.full((n_ep,), -1, dtype=torch.long, device=eid.device)
            row[eid[first]] = torch.arange(first.numel(), device=eid.device)  # episode -> row of the (E, L) table
            L = int(tau[steps].max().item()) + 1 if steps.numel() else 1
            to_go = rewards_to_go(ro.rewards, ro.terminated, ro.truncated, c.gamma)
            table = torch.zeros(first.numel(), L, dtype=ret.dtype, device=ret.device)  # (E, L), 0 after the end
            table[row[eid[steps]], tau[steps]] = flat(to_go)[steps]
            adv_el, ok_e = rloo_advantages(table, flat(ro.group)[first])  # (E, L), (E,)
            adv = torch.zeros_like(flat(ret))
            adv[steps] = adv_el[row[eid[steps]], tau[steps]]
            ret = to_go
        else:  # one advantage per episode, on all its steps
            fn = rloo_advantages if c.algo == "rloo" else lambda r, g: grpo_advantages(r, g, c.group_eps)
            adv_e, ok_e = fn(flat(ret)[first], flat(ro.group)[first])  # (E,) each
            adv = torch.zeros(n_ep, dtype=ret.dtype, device=ret.device).index_copy_(0, eid[first], adv_e)[eid]
        ok_table = torch.zeros(n_ep, dtype=torch.bool, device=ret.device).index_copy_(0, eid[first], ok_e)
        self._group_stats = {"group/episodes": float(first.numel()), "group/skipped_alone": float((~ok_e).sum())}
        return unflat(adv), ret, mask & unflat(ok_table[eid])

    def lr_fraction(self) -> float:
        """The LR multiplier of the next update under linear annealing (see ``lr_schedule_start``)."""
        u0, f0 = self.lr_schedule_start
        if (u0, f0) == (0, 1.0):
            return max(1.0 - self.num_updates / self.total_updates, 0.0)
        return max(f0 * (self.total_updates - self.num_updates) / max(self.total_updates - u0, 1), 0.0)

    def _set_lr(self) -> None:
        if self.config.anneal_lr and self.total_updates:
            frac = self.lr_fraction()
            for group in self.optimizer.param_groups:
                group["lr"] = frac * self.config.learning_rate

    def update(self, ro: Rollout) -> dict[str, float]:
        """One learning step on a rollout; returns CleanRL-style loss statistics.

        Data-parallel (``torchrun``, see :mod:`runners.common.distributed`): each rank passes its own
        rollout; advantage statistics, minibatch counts, gradients (weighted by each rank's
        learnable steps, or by its rollout steps for REINFORCE), the early stop at ``target_kl``
        and the returned statistics are all global, so N ranks with E envs each take the step
        one process with N·E envs would.

        Rollouts must be consecutive (one collector): REINFORCE, RLOO and GRPO learn from the steps
        of the episodes that finish in ``ro``, including their steps carried over from earlier rollouts.
        """
        c = self.config
        self._set_lr()
        rollout_steps = ro.valid.numel()  # T * N of the new rollout: REINFORCE's loss denominator
        if c.monte_carlo:  # learn each episode once it has ended, carried steps included
            ro = prepend(self.carry, ro)
            self.carry = unfinished_tail(ro)
        adv, targets, mask = self.advantages(ro)  # (T, N) each
        flat = lambda x: x.transpose(0, 1).reshape(-1)  # noqa: E731  (T, N) -> (N*T,)
        adv, targets, mask = flat(adv), flat(targets), flat(mask)
        old_logprob, old_values, actions = flat(ro.logprobs), flat(ro.values[:-1]), flat(ro.actions)
        mask_rows = flat(ro.action_masks.index) if ro.action_masks is not None else None  # (N*T,) table rows
        obs = _flatten_obs(ro.obs)
        chunk = torch.as_tensor(
            chunk_ids(ro.episode_start.cpu().numpy(), ro.valid.cpu().numpy()), device=self.device
        )  # (N*T,)
        learn_chunks = torch.unique(chunk[mask])  # chunks with at least one learnable step
        # every rank agrees on the minibatch count (ranks short of chunks get empty minibatches)
        max_chunks = int(distributed.all_reduce(torch.tensor([learn_chunks.numel()], device=self.device), "max").item())
        if max_chunks == 0:
            return {"skipped": 1.0, **(self._group_stats if c.group_based else {})}  # e.g. every episode alone
        adv = torch.where(mask, adv, 0.0)
        ref_logprob = None if ro.ref_logprobs is None else flat(ro.ref_logprobs)
        kl_loss_on = c.kl_mode == "loss" and ro.kl_coef > 0
        if kl_loss_on and ref_logprob is None:
            raise ValueError("kl_mode='loss' needs Rollout.ref_logprobs (the env's info['ref_logprob'])")
        norm = c.norm_adv and c.algo != "grpo"  # PPO: whiten; REINFORCE/RLOO: rescale only (no hidden baseline)
        per_minibatch = norm and c.norm_adv_scope == "minibatch"
        if norm and not per_minibatch:
            adv[mask] = self._normalize(adv[mask], center=c.algo == "ppo")
        n_learn = mask.sum()  # this rank's learnable steps
        denom = rollout_steps if c.algo == "reinforce" else n_learn  # of the one-step-per-rollout loss
        epochs = c.update_epochs if c.clipped else 1
        step_each_minibatch = c.clipped
        num_groups = min(c.num_minibatches, max_chunks)
        stat_keys = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "kl_k3")
        history: list[Tensor] = []  # per epoch: (groups, 1 + len(stat_keys)) global [n, means...]
        self.net.train()
        for _ in range(epochs):
            perm = learn_chunks[torch.randperm(learn_chunks.numel(), device=self.device)]
            groups = torch.tensor_split(perm, num_groups)
            if not step_each_minibatch:
                self.optimizer.zero_grad(set_to_none=True)
            sums = torch.zeros(num_groups, 1 + len(stat_keys), dtype=torch.float64, device=self.device)
            for g, group in enumerate(groups):
                if step_each_minibatch:
                    self.optimizer.zero_grad(set_to_none=True)
                n_group = torch.zeros((), device=self.device)
                in_group = torch.isin(chunk, group)  # (N*T,) all False for an empty group
                if per_minibatch:  # before the branch: every rank joins the statistics' collective
                    adv_group = self._normalize(adv[in_group & mask], center=c.algo == "ppo")
                if group.numel() > 0:  # empty only on a rank with fewer chunks than minibatches
                    idx = torch.nonzero(in_group).squeeze(1)  # (B,) steps, chunk-contiguous
                    batch = self._make_batch(obs, actions, chunk, idx)
                    logits, values = self.net.evaluate(batch)  # (B, A), (B,)
                    if ro.action_masks is not None:  # the masked distribution the actions were sampled from
                        logits = apply_mask(logits.float(), ro.action_masks.table[mask_rows[idx]])
                    m = mask[idx]
                    n_group = m.sum()
                    dist = torch.distributions.Categorical(logits=logits[m])
                    logprob = dist.log_prob(actions[idx][m])
                    entropy = dist.entropy().mean()
                    a = adv_group if per_minibatch else adv[idx][m]
                    v_loss = losses.value_loss(
                        values[m], old_values[idx][m], targets[idx][m],
                        c.clip_coef if (c.algo == "ppo" and c.clip_vloss) else None,
                    )
                    use_value = c.algo == "ppo" or (c.algo == "reinforce" and c.reinforce_baseline)
                    kl = clipfrac = kl_k3 = torch.full((), float("nan"), device=self.device)
                    if c.clipped:
                        pg_loss, ratio = losses.ppo_clip_loss(logprob, old_logprob[idx][m], a, c.clip_coef)
                        with torch.no_grad():
                            kl = losses.approx_kl(logprob, old_logprob[idx][m])
                            clipfrac = losses.clip_fraction(ratio, c.clip_coef)
                    else:
                        pg_loss = losses.reinforce_loss(logprob, a)
                    loss = pg_loss - c.ent_coef * entropy + (c.vf_coef * v_loss if use_value else 0.0)
                    if kl_loss_on:  # GRPO's KL term β·k3 on the current log-probs
                        kl_k3 = losses.k3_kl(logprob, ref_logprob[idx][m])
                        loss = loss + ro.kl_coef * kl_k3
                    # one step per rollout: Σ over the learned steps / denom (REINFORCE: rollout steps, a constant)
                    weight = 1.0 if step_each_minibatch else n_group / denom
                    (loss * weight).backward()
                    v_stat = v_loss if use_value else torch.full((), float("nan"), device=self.device)  # not trained
                    parts = torch.stack([pg_loss, v_stat, entropy, kl, clipfrac, kl_k3]).detach()
                    sums[g] = torch.cat([n_group[None], n_group * parts])
                if step_each_minibatch:
                    distributed.all_reduce_grads(self.net.parameters(), weight=n_group)
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), c.max_grad_norm)
                    self.optimizer.step()
            if not step_each_minibatch:
                distributed.all_reduce_grads(self.net.parameters(), weight=denom)
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), c.max_grad_norm)
                self.optimizer.step()
            distributed.all_reduce(sums)  # one collective per epoch: global per-minibatch means
            history.append(torch.cat([sums[:, :1], sums[:, 1:] / sums[:, :1]], dim=1))
            kl_epoch = history[-1][:, 1 + stat_keys.index("approx_kl")]
            if c.target_kl is not None and c.clipped and kl_epoch.mean().item() > c.target_kl:
                break
        self.num_updates += 1
        self.net.eval()
        hist = torch.cat(history).cpu().numpy()  # (epochs * groups, 1 + stats): [n, means...]
        out = {k: float(np.average(hist[:, 1 + i], weights=hist[:, 0])) for i, k in enumerate(stat_keys)
               if np.isfinite(hist[:, 1 + i]).all()}  # step-weighted: independent of the minibatch split
        if c.group_based:
            out.update(self._group_stats)
        else:
            out["explained_variance"] = self._explained_variance(old_values[mask], targets[mask])
        out["learning_rate"] = self.optimizer.param_groups[0]["lr"]
        return out

    @staticmethod
    def _explained_variance(pred: Tensor, target: Tensor) -> float:
        """:func:`losses.explained_variance` over the learnable steps of all ranks."""
        if not distributed.is_distributed():
            return losses.explained_variance(pred, target)
        y, r = target.double(), (target - pred).double()
        n, sy, syy, sr, srr = distributed.global_sum(y.numel(), y.sum(), y.square().sum(), r.sum(), r.square().sum(),
                                                     device=y.device).tolist()
        var_y = syy / n - (sy / n) ** 2
        return float("nan") if var_y <= 0 else 1.0 - (srr / n - (sr / n) ** 2) / var_y

    @staticmethod
    def _normalize(x: Tensor, center: bool, eps: float = 1e-8) -> Tensor:
        """``(x - mean) / std`` (``center``) or ``x / std`` over the learnable steps of ALL ranks."""
        if not distributed.is_distributed():
            if center:
                return losses.normalize(x, eps)
            return x / (x.std() + eps) if x.numel() > 1 else x
        n, s, ss = distributed.global_sum(x.numel(), x.sum(), x.double().square().sum(), device=x.device)
        mean = s / n
        std = ((ss - n * mean**2).clamp(min=0.0) / (n - 1)).sqrt() if n > 1 else None
        if center:
            return (x - mean).float() if std is None else ((x - mean) / (std + eps)).float()
        return x if std is None else (x / (std + eps)).float()

    @staticmethod
    def _make_batch(obs: Obs, actions: Tensor, chunk: Tensor, idx: Tensor) -> StepBatch:
        """Gather steps ``idx`` (whole chunks, column-major order) into a :class:`StepBatch`."""
        c = chunk[idx]  # (B,) global chunk ids, non-decreasing
        _, local = torch.unique_consecutive(c, return_inverse=True)  # (B,) in [0, C)
        is_last = torch.ones_like(c, dtype=torch.bool)
        is_last[:-1] = c[1:] != c[:-1]
        chunk_last = torch.nonzero(is_last).squeeze(1)  # (C,)
        steps_to_end = chunk_last[local] - torch.arange(c.numel(), device=c.device)  # (B,)
        return StepBatch(_index_obs(obs, idx), actions[idx], local, steps_to_end, chunk_last)
