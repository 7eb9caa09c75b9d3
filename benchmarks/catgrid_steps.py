"""Steps per second of CatGrid-v0: numpy-native vector env vs SyncVectorEnv of the single env.

Random actions are pre-sampled in one batch so the timing measures the environments only.
Run: ``python benchmarks/catgrid_steps.py --num-envs 1024``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import tyro

import envs  # noqa: F401  (registers CatGrid-v0)


@dataclass
class Args:
    num_envs: int = 1024
    """Number of parallel cats N (same for both vector envs)."""
    native_steps: int = 5000
    """Vector steps timed for the native env."""
    sync_steps: int = 50
    """Vector steps timed for SyncVectorEnv (much slower, so fewer)."""
    map_name: str = "8x8"
    seed: int = 0


def steps_per_second(env: gym.vector.VectorEnv, n_steps: int, seed: int) -> float:
    """Env steps per second (vector steps x num_envs) under uniformly random actions."""
    actions = np.random.default_rng(seed).integers(0, 4, size=(n_steps, env.num_envs))  # (T, N)
    env.reset(seed=seed)
    env.step(actions[0])  # warm-up
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    return n_steps * env.num_envs / (time.perf_counter() - start)


def main(args: Args) -> None:
    native = gym.make_vec("CatGrid-v0", num_envs=args.num_envs, vectorization_mode="vector_entry_point",
                          map_name=args.map_name)
    sync = gym.make_vec("CatGrid-v0", num_envs=args.num_envs, vectorization_mode="sync", map_name=args.map_name)
    rows = [
        ("native CatGridVectorEnv", args.native_steps, steps_per_second(native, args.native_steps, args.seed)),
        ("SyncVectorEnv(CatGridEnv)", args.sync_steps, steps_per_second(sync, args.sync_steps, args.seed)),
    ]
    native.close()
    sync.close()
    print(f"CatGrid-v0 {args.map_name}, N={args.num_envs} envs, random actions")
    print(f"{'vector env':<28}{'vector steps':>14}{'env steps/s':>16}")
    for name, n, sps in rows:
        print(f"{name:<28}{n:>14,}{sps:>16,.0f}")
    print(f"speed-up native / sync: {rows[0][2] / rows[1][2]:.0f}x")


if __name__ == "__main__":
    main(tyro.cli(Args))
