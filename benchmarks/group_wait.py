"""What learning every RLOO/GRPO group once, complete, costs: how long finished episodes wait in the carry.

    python benchmarks/group_wait.py --algo grpo --num-steps 7 --updates 60
    python benchmarks/group_wait.py --algo rloo --num-steps 64 --updates 30
    python benchmarks/group_wait.py --env TextGen-IMDB-v0 --algo grpo --model PATH --reward-model PATH --updates 30

A group (the e-th episode of each of the k rows of a block) is learned once all k episodes have finished; its
finished episodes wait in the agent's carry until then (agents/carry.py). The script trains the CatGrid-v0
preset and reports the fraction of finished episodes that entered a loss (the rest are still waiting at the
end), the mean wait of a finished episode in updates (Little's law: episodes waiting per update / episodes
learned per update), the carried steps as a fraction of the rollout's steps (memory), and the env steps spent
in idle episodes (a row that has finished its episode of the block's group waits for its mates,
agents/group_ids.py): the price of keeping the rows of a block in step.

On the text envs (``--env TextGen-IMDB-v0``: the env's preset, 64 envs x 17 steps, unless ``--num-envs`` /
``--num-steps`` say otherwise) the env pairs the e-th episodes of a block's rows and the rows are not held in
step, so the script also reports their drift: the spread (max - min) of the group episodes the rows of a block have
started, averaged over blocks and rollouts, and its maximum.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from agents.rollout import RolloutCollector
from runners.train import build_agent, make_envs, preset


@dataclass
class Args:
    algo: Literal["rloo", "grpo"] = "grpo"
    env: Literal["CatGrid-v0", "TextGen-IMDB-v0"] = "CatGrid-v0"
    num_steps: int | None = None
    """rollout length (default: 7 on CatGrid, the preset's 17 on text)"""
    updates: int = 60
    num_envs: int | None = None
    """default: 16 on CatGrid, the preset's 64 on text"""
    group_size: int = 4
    seed: int = 0
    threads: int = 1
    model: str | None = None
    """text: the policy and reference model (a local directory, e.g. the SFT stage of runners.rlhf)"""
    reward_model: str = "vader"
    max_new_tokens: int = 16
    min_new_tokens: int = 0


def main() -> None:
    import tyro

    args = tyro.cli(Args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = preset(args.env, args.algo)
    text = args.env != "CatGrid-v0"
    if text:
        if args.model is None:
            raise SystemExit("--env TextGen-IMDB-v0 needs --model PATH (e.g. the sft/ of python -m runners.rlhf)")
        cfg = dataclasses.replace(cfg, model=args.model, reward_model=args.reward_model,
                                  max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens)
    cfg = dataclasses.replace(cfg, num_steps=args.num_steps or (cfg.num_steps if text else 7),
                              num_envs=args.num_envs or (cfg.num_envs if text else 16),
                              group_size=args.group_size, seed=args.seed)
    envs = make_envs(cfg)  # with episode statistics
    agent = build_agent(cfg, envs, total_updates=args.updates)
    collector = RolloutCollector(envs, agent, cfg.num_steps, cfg.reward_scale, seed=args.seed,
                                 group_size=cfg.group_size)
    finished = learned = waiting = carried = idle = 0.0
    started = np.zeros(cfg.num_envs, dtype=np.int64)  # (N,) episodes each row has started
    spreads: list[np.ndarray] = []  # per rollout: (N / k,) max - min of started over each block's rows
    for _ in range(args.updates):
        ro, _ = collector.collect()
        finished += int((ro.valid & (ro.terminated | ro.truncated) & (ro.group >= 0)).sum())
        idle += int((ro.valid & (ro.group < 0)).sum())
        started += (ro.valid & ro.episode_start & (ro.group >= 0)).sum(0).cpu().numpy()  # idle ones not
        per_block = started.reshape(-1, cfg.group_size)
        spreads.append(per_block.max(1) - per_block.min(1))
        stats = agent.update(ro)
        learned += stats.get("group/episodes", 0.0)
        waiting += stats.get("group/waiting", 0.0)
        carried += 0 if agent.carry is None else int(agent.carry.valid.sum())
    rollout_steps = args.updates * cfg.num_steps * cfg.num_envs
    spread = np.stack(spreads)  # (updates, N / k)
    print(f"{args.algo} {args.env}, {cfg.num_envs} envs x {cfg.num_steps} steps, groups of {cfg.group_size}, "
          f"{args.updates} updates: {int(finished)} group episodes finished, {int(learned)} learned "
          f"({learned / max(finished, 1):.1%}; the rest still wait), mean wait of a finished episode "
          f"{waiting / max(learned, 1):.2f} updates, carried steps {carried / rollout_steps:.1%} of the rollout, "
          f"idle env steps {idle / rollout_steps:.1%}, drift of a block's rows {spread.mean():.2f} episodes "
          f"(last rollout {spread[-1].mean():.2f}, max {spread.max()})")
    envs.close()


if __name__ == "__main__":
    main()
