"""Variance of the policy-gradient estimate: REINFORCE vs REINFORCE + value baseline vs RLOO, same rollouts.

    python benchmarks/pg_variance.py --env CatGrid-v0 --warmup-updates 20 --batches 24
    python benchmarks/pg_variance.py --env TextGen-IMDB-v0 --model artifacts/rlhf-small/sft \\
        --reward-model artifacts/rlhf-small/rm --warmup-updates 10 --batches 16

The lecture's claim: a baseline leaves ``E[∇log π · Ψ]`` unchanged but shrinks its variance. The
script warms an agent up with REINFORCE + value baseline (so ``V(s)`` is a fitted baseline and the
policy is mid-training), freezes it, collects ``--batches`` independent rollouts with group ids
(``--group-size`` rows per group) and computes on every rollout, over the *same* steps (those of
complete episodes with a group partner), the gradient ``ĝ = ∇ (1/n) Σ_t log π(a_t|s_t) Ψ_t`` for

- ``G_0``: REINFORCE, the whole-episode return;
- ``G_t``: REINFORCE, reward-to-go;
- ``G_t - V(s_t)``: REINFORCE with the learned value baseline;
- ``G_0 - b_LOO``: RLOO, minus the mean return of the other episodes of the group;
- ``G_t - b_LOO,t``: RLOO on reward-to-go, minus the other episodes' reward-to-go at the same step.

It reports the total variance of ``ĝ`` across rollouts (trace of its covariance), its ratio to
plain REINFORCE, ``|E ĝ|²`` (signal), the cosine between each mean gradient and REINFORCE's
(unbiasedness check: should approach 1 with more batches) and the variance of Ψ over steps.
No advantage normalisation is applied (it would rescale the estimators differently).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from agents.agent import Agent
from agents.batch import chunk_ids, flatten, flatten_obs, make_batch
from agents.estimators import rloo_advantages
from agents.returns import complete_episode_mask, episode_returns, rewards_to_go
from agents.rollout import RolloutCollector
from runners.train import build_agent, make_envs, preset


@dataclass
class Args:
    env: str = "CatGrid-v0"
    seed: int = 0
    warmup_updates: int = 20
    """REINFORCE + baseline updates before the policy is frozen"""
    batches: int = 24
    """independent rollouts the variance is measured over"""
    group_size: int = 4
    num_envs: int | None = None
    num_steps: int | None = None
    model: str | None = None
    reward_model: str | None = None
    max_new_tokens: int = 10
    threads: int = 1


ESTIMATORS = ("G_0 (REINFORCE)", "G_t (reward-to-go)", "G_t - V(s_t) (baseline)", "G_0 - b_LOO (RLOO)",
              "G_t - b_LOO,t (RLOO to-go)")


def weights(agent: Agent, ro) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Ψ (T, N) of every estimator and the common mask of steps they are compared on."""
    c = agent.config
    g0 = episode_returns(ro.rewards, ro.terminated, ro.truncated, ro.episode_start, c.gamma)
    gt = rewards_to_go(ro.rewards, ro.terminated, ro.truncated, c.gamma)
    rloo = lambda ret: rloo_advantages(ro, dataclasses.replace(c, algo="rloo", reinforce_return=ret))  # noqa: E731
    loo_est = rloo("episode")  # mask: complete episodes with a group partner
    loo, mask, loo_t = loo_est.adv, loo_est.mask, rloo("to_go").adv
    mask = mask & ro.valid & complete_episode_mask(ro.terminated, ro.truncated, ro.episode_start, True)
    psi = dict(zip(ESTIMATORS, (g0, gt, gt - ro.values[:-1], loo, loo_t)))
    return psi, mask


def gradient(agent: Agent, ro, psi: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flat ∇_θ of (1/n) Σ log π(a|s) Ψ over the masked steps (the ascent direction)."""
    m, w, actions = flatten(mask), flatten(psi), flatten(ro.actions)
    chunk = torch.as_tensor(chunk_ids(ro.episode_start.cpu().numpy(), ro.valid.cpu().numpy()), device=agent.device)
    idx = torch.nonzero(torch.isin(chunk, torch.unique(chunk[m]))).squeeze(1)
    batch = make_batch(flatten_obs(ro.obs), actions, chunk, idx)
    logits, _ = agent.net.evaluate(batch)
    logp = torch.distributions.Categorical(logits=logits[m[idx]]).log_prob(actions[idx][m[idx]])
    objective = (logp * w[idx][m[idx]].detach()).sum() / m.sum()
    params = [p for p in agent.net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(objective, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def main() -> None:
    import tyro

    args = tyro.cli(Args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = preset(args.env, "reinforce")
    # raw weights: normalising would rescale each estimator differently
    agent_cfg = dataclasses.replace(cfg.agent, norm_adv=False)
    over: dict = {"seed": args.seed, "group_size": args.group_size, "num_envs": args.num_envs or cfg.num_envs}
    if args.env == "TextGen-IMDB-v0":
        over |= {"model": args.model or cfg.model, "reward_model": args.reward_model or cfg.reward_model,
                 "max_new_tokens": args.max_new_tokens, "num_steps": args.max_new_tokens + 1,
                 # fixed length: every row finishes one episode per rollout
                 "min_new_tokens": args.max_new_tokens, "num_envs": args.num_envs or 32}
        agent_cfg = dataclasses.replace(agent_cfg, learning_rate=2e-4)
    over["num_steps"] = args.num_steps or over.get("num_steps", cfg.num_steps)
    cfg = dataclasses.replace(cfg, agent=agent_cfg, **over)
    envs = make_envs(cfg)
    agent = build_agent(cfg, envs, total_updates=None)
    collector = RolloutCollector(envs, agent, cfg.num_steps, cfg.reward_scale, seed=args.seed,
                                 group_size=cfg.group_size)
    t0 = time.time()
    for _ in range(args.warmup_updates):
        agent.update(collector.collect()[0])
    print(f"{args.env}: warm-up {args.warmup_updates} REINFORCE+baseline updates in {time.time() - t0:.0f}s; "
          f"{args.batches} rollouts of {cfg.num_envs} envs x {cfg.num_steps} steps, group size {cfg.group_size}")
    agent.net.eval()
    grads: dict[str, list[torch.Tensor]] = {k: [] for k in ESTIMATORS}
    psi_var: dict[str, list[float]] = {k: [] for k in ESTIMATORS}
    steps = []
    for _ in range(args.batches):
        ro, _ = collector.collect()
        psi, mask = weights(agent, ro)
        steps.append(int(mask.sum()))
        for k, w in psi.items():
            grads[k].append(gradient(agent, ro, w, mask).double())
            psi_var[k].append(float(w[mask].double().var()))
    ref_mean = torch.stack(grads[ESTIMATORS[0]]).mean(0)
    base_var = None
    print(f"steps per rollout used by every estimator: {np.mean(steps):.0f} (mean)")
    print(f"{'estimator':<28} {'tr Var[g]':>12} {'ratio':>7} {'|E g|^2':>11} {'cos(E g, E g_G0)':>17} {'Var[Psi]':>10}")
    for k in ESTIMATORS:
        g = torch.stack(grads[k])  # (batches, P)
        mean = g.mean(0)
        var = float(((g - mean) ** 2).sum(1).mean() * len(g) / (len(g) - 1))
        base_var = var if base_var is None else base_var
        cos = float(torch.nn.functional.cosine_similarity(mean, ref_mean, dim=0))
        print(f"{k:<28} {var:12.4e} {var / base_var:7.3f} {float(mean @ mean):11.4e} {cos:17.3f} "
              f"{np.mean(psi_var[k]):10.4f}")
    envs.close()


if __name__ == "__main__":
    main()
