"""Benchmark: wall time and env steps to reach threshold·V*(start) on CatGrid-v0 (greedy policy), any --algo.

    python benchmarks/catgrid_ppo.py --map-name 5x5 --seeds 0 1 2 --threshold 0.99

Trains with the default PPO preset of ``runners.train`` and evaluates the greedy policy
(``--eval-episodes`` episodes) every ``--eval-every`` updates; evaluation time is excluded
from the reported training wall time.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import gymnasium as gym
import torch

from agents.rollout import RolloutCollector
from runners.common.evaluation import evaluate, optimal_start_value
from runners.train import build_agent, make_envs, preset


@dataclass
class Args:
    map_name: str = "5x5"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    threshold: float = 0.99
    eval_every: int = 2
    eval_episodes: int = 500
    threads: int = 2
    algo: str = "ppo"
    norm_adv_scope: str = "rollout"
    """statistics of the advantage normalisation: rollout | minibatch"""


def time_to_threshold(args: Args, seed: int) -> dict[str, float]:
    cfg = preset("CatGrid-v0", args.algo)
    cfg = dataclasses.replace(cfg, seed=seed, map_name=args.map_name,
                              agent=dataclasses.replace(cfg.agent, norm_adv_scope=args.norm_adv_scope))
    torch.manual_seed(seed)
    envs = make_envs(cfg)
    eval_envs = gym.make_vec("CatGrid-v0", num_envs=64, vectorization_mode="vector_entry_point", map_name=args.map_name)
    v_star = optimal_start_value(eval_envs, cfg.agent.gamma)
    agent = build_agent(cfg, envs, total_updates=cfg.num_updates)
    collector = RolloutCollector(envs, agent, cfg.num_steps, cfg.reward_scale, seed=seed, group_size=cfg.group_size)
    train_time, ratio = 0.0, float("nan")
    for update in range(cfg.num_updates):
        t0 = time.perf_counter()
        agent.update(collector.collect()[0])
        train_time += time.perf_counter() - t0
        if (update + 1) % args.eval_every == 0:
            with torch.no_grad():
                res = evaluate(agent, eval_envs, args.eval_episodes, cfg.agent.gamma, greedy=True, seed=999)
            ratio = res["discounted_return"] / v_star
            if ratio >= args.threshold:
                break
    return {"seed": seed, "reached": ratio >= args.threshold, "ratio": ratio,
            "env_steps": collector.global_step, "train_seconds": train_time}


def main() -> None:
    import tyro

    args = tyro.cli(Args)
    torch.set_num_threads(args.threads)
    print(f"{args.algo} on CatGrid-v0 {args.map_name} "
          f"(norm_adv_scope={args.norm_adv_scope}, {args.threads} thread(s)): "
          f"time to greedy >= {args.threshold} x V*(start)")
    print(f"{'seed':>4} {'reached':>8} {'ratio':>7} {'env steps':>10} {'train s':>8}")
    for seed in args.seeds:
        r = time_to_threshold(args, seed)
        print(f"{r['seed']:>4} {str(r['reached']):>8} {r['ratio']:7.4f} {r['env_steps']:>10} {r['train_seconds']:8.1f}")


if __name__ == "__main__":
    main()
