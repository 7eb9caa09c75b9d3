"""Evaluate a trained agent: greedy and sampled success rate and mean discounted return.

For CatGrid the result is printed next to the exact optimum ``V*(start)`` from value
iteration. Usable in-process (:func:`evaluate`) or as a command::

    python -m runners.evaluate runs/CatGrid-v0__ppo__0__<time> --episodes 500

Text runs (TextGen-IMDB-v0) are evaluated on held-out prompts (``--split test``, ``--episodes``
prompts, one sampled response each, under the run's length controls): mean score ± standard
error with a 95% interval, KL to the reference, response length in tokens and characters, EOS
rate, distinct-1/2 and a samples table (see :mod:`runners.common.text_eval`); the numbers are also
written to ``<run dir>/eval_text_<split>.json``::

    python -m runners.evaluate runs/TextGen-IMDB-v0__ppo__0__<time> --episodes 256
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import tyro

from agents.validate import check_fields
from runners.common import cli
from runners.common.checkpoint import run_dir_of
from runners.common.evaluation import evaluate, evaluate_report, format_report  # noqa: F401  (re-exported)
from runners.common.load import load_run, run_config
from runners.common.run_spec import TrainConfig, make_envs
from runners.common.text_eval import evaluate_text, format_text_report


@dataclass(frozen=True)
class EvalArgs:
    """Evaluate a run written by runners.train (greedy and sampled; CatGrid-v0 next to the exact optimum V*(start))."""

    checkpoint: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """run directory (or its checkpoint/, or a checkpoint-NNNNNN/ version dir)"""
    episodes: int = 500
    seed: int = 12345
    num_envs: int | None = None
    """parallel envs (default: the run's)"""
    device: str = "auto"
    """auto (CUDA if available), cpu or cuda[:N]"""
    model: str | None = None
    """text runs: policy/reference LM dir or HF id (required if the run was trained on an in-memory model)"""
    reward_model: str | None = None
    """text runs: reward model dir, HF id or 'vader' (default: the run's)"""
    dataset: str | None = None
    """text runs: prompt dataset (default: the run's)"""
    split: str = "test"
    """text runs: dataset split of the held-out prompts (one episode per prompt; --episodes prompts)"""

    def __post_init__(self) -> None:
        check_fields(self, {"episodes": "int>=1", "seed": "int>=0", "num_envs": "int>=1?"})


def parse_args(argv: list[str] | None = None) -> EvalArgs:
    """The command line of ``python -m runners.evaluate``."""
    return cli.parse(EvalArgs, "runners.evaluate", __doc__, args=argv)


def main(args: EvalArgs | None = None) -> dict[str, Any]:
    """CLI entry point: ``python -m runners.evaluate --help``; CatGrid runs here, text runs in :func:`main_text`."""
    args = args or parse_args()
    overrides = {"model": args.model, "reward_model": args.reward_model, "dataset": args.dataset}
    cfg = run_config(args.checkpoint, args.device, **overrides)
    if cfg.env != "CatGrid-v0":
        return main_text(args, cfg, overrides)
    envs = make_envs(cfg, num_envs=cfg.num_envs if args.num_envs is None else args.num_envs, eval_mode=True)
    agent, _ = load_run(args.checkpoint, args.device, envs=envs, **overrides)
    with torch.no_grad():
        report = evaluate_report(agent, envs, args.episodes, cfg.agent.gamma, args.seed)
    print(format_report(report))
    envs.close()
    return report


def main_text(args: EvalArgs, cfg: TrainConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """Text runs: ``args.episodes`` held-out prompts (IMDB test split), one episode each, all rows at once."""
    split = args.split
    envs = make_envs(cfg, num_envs=args.episodes, eval_mode=True, overrides={"split": split})
    agent, _ = load_run(args.checkpoint, args.device, envs=envs, **overrides)
    hi = cfg.max_new_tokens_range[1] if cfg.max_new_tokens_range else cfg.max_new_tokens
    with torch.no_grad():
        report = evaluate_text(agent, envs, hi, seed=args.seed)
    envs.close()
    report["split"] = split
    print(format_text_report(report))
    (run_dir_of(args.checkpoint) / f"eval_text_{split}.json").write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
