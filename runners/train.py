"""Train the agent (PPO, REINFORCE, RLOO or GRPO) on CatGrid-v0 or TextGen-IMDB-v0.

    python -m runners.train --env CatGrid-v0 --algo ppo --seed 0
    python -m runners.train --env CatGrid-v0 --algo reinforce --map-name 8x8
    python -m runners.train --env CatGrid-v0 --algo rloo --group-size 4
    python -m runners.train --env TextGen-IMDB-v0 --model PATH --reward-model PATH|vader
    python -m runners.train --resume runs/CatGrid-v0__ppo__0__1732450000
    torchrun --nproc-per-node 2 -m runners.train --env CatGrid-v0 --num-envs 32   # data-parallel

``--help`` lists every option with the defaults of the chosen ``--env`` and ``--algo``. TensorBoard logs go to
``runs/<env>__<algo>__<seed>__<time>`` with CleanRL's tag names; the run directory also holds ``checkpoint/``
(safetensors + JSON, written atomically) and ``eval.json``. An existing run directory is never appended to:
continue it with ``--resume``.

Under ``torchrun`` (:mod:`runners.common.distributed`) every rank runs its own ``--num-envs`` envs
(env seeds offset by ``rank × num_envs``, sampling seed ``seed + rank``) and the gradients are
combined every optimizer step; ``--total-timesteps`` counts the steps of all ranks. Rank 0
alone writes TensorBoard, checkpoints and the evaluation, from the episodes of all ranks.
"""


from __future__ import annotations

import argparse
import sys
from typing import Any

from runners.common import cli, distributed
from runners.common.checkpoint import read_state
from runners.common.run_loop import train
from runners.common.run_spec import (  # noqa: F401  (re-exported)
    TrainConfig,
    build_agent,
    env_kwargs,
    make_envs,
    preset,
)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """``--env``/``--algo`` pick the preset, tyro parses the rest on top of it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env", default="CatGrid-v0")
    pre.add_argument("--algo", default="ppo")
    pre.add_argument("--resume", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.resume:  # a run dir, its checkpoint/ or a checkpoint-NNNNNN/ version dir
        default = TrainConfig.from_dict(read_state(known.resume)["config"])
    else:
        default = preset(known.env, known.algo)
    return cli.parse(TrainConfig, "runners.train", __doc__, args=argv, default=default)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point: ``python -m runners.train --help``."""
    try:
        return train(parse_args(argv))
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
