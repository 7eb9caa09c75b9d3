"""What learning every RLOO/GRPO group once, complete, costs: how long finished episodes wait in the carry.

    python benchmarks/group_wait.py --algo grpo --num-steps 7 --updates 60
    python benchmarks/group_wait.py --algo rloo --num-steps 64 --updates 30

A group (the e-th episode of each of the k rows of a block) is learned once all k episodes have finished; its
finished episodes wait in the agent's carry until then (agents/carry.py). The script trains the CatGrid-v0
preset and reports the fraction of finished episodes that entered a loss (the rest are still waiting at the
end), the mean wait of a finished episode in updates (Little's law: episodes waiting per update / episodes
learned per update), the carried steps as a fraction of the rollout's steps (memory), and the env steps spent
in idle episodes (a row that has finished its episode of the block's group waits for its mates,
agents/group_ids.py): the price of keeping the rows of a block in step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from agents.rollout import RolloutCollector
from runners.train import build_agent, make_envs, preset


@dataclass
class Args:
    algo: Literal["rloo", "grpo"] = "grpo"
    num_steps: int = 7
    updates: int = 60
    num_envs: int = 16
    group_size: int = 4
    seed: int = 0
    threads: int = 1


def main() -> None:
    import tyro

    args = tyro.cli(Args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = dataclasses.replace(preset("CatGrid-v0", args.algo), num_steps=args.num_steps, num_envs=args.num_envs,
                              group_size=args.group_size, seed=args.seed)
    envs = make_envs(cfg)  # with episode statistics
    agent = build_agent(cfg, envs, total_updates=args.updates)
    collector = RolloutCollector(envs, agent, cfg.num_steps, cfg.reward_scale, seed=args.seed,
                                 group_size=cfg.group_size)
    finished = learned = waiting = carried = idle = 0.0
    for _ in range(args.updates):
        ro, _ = collector.collect()
        finished += int((ro.valid & (ro.terminated | ro.truncated) & (ro.group >= 0)).sum())
        idle += int((ro.valid & (ro.group < 0)).sum())
        stats = agent.update(ro)
        learned += stats.get("group/episodes", 0.0)
        waiting += stats.get("group/waiting", 0.0)
        carried += 0 if agent.carry is None else int(agent.carry.valid.sum())
    rollout_steps = args.updates * cfg.num_steps * cfg.num_envs
    print(f"{args.algo} CatGrid-v0, {cfg.num_envs} envs x {cfg.num_steps} steps, groups of {cfg.group_size}, "
          f"{args.updates} updates: {int(finished)} group episodes finished, {int(learned)} learned "
          f"({learned / max(finished, 1):.1%}; the rest still wait), mean wait of a finished episode "
          f"{waiting / max(learned, 1):.2f} updates, carried steps {carried / rollout_steps:.1%} of the rollout, "
          f"idle env steps {idle / rollout_steps:.1%}")
    envs.close()


if __name__ == "__main__":
    main()
