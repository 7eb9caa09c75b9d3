"""Evaluate a trained agent: greedy and sampled success rate and mean discounted return.

For CatGrid the result is printed next to the exact optimum ``V*(start)`` from value
iteration. Usable in-process (:func:`evaluate`) or as a command::

    python -m runners.evaluate runs/CatGrid-v0__ppo__0__<time> --episodes 500

Text runs (TextGen-IMDB-v0) are evaluated on held-out prompts (``--split test``, ``--episodes``
prompts, one sampled response each, under the run's length controls): mean score ± standard
error with a 95% interval, KL to the reference, response length in tokens and characters, EOS
rate, distinct-1/2 and a samples table (see :mod:`runners.text_eval`); the numbers are also
written to ``<run dir>/eval_text_<split>.json``::

    python -m runners.evaluate runs/TextGen-IMDB-v0__ppo__0__<time> --episodes 256
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
import torch
import tyro

from agents.agent import Agent
from agents.masking import mask_from_info
from runners.text_eval import evaluate_text, format_text_report  # noqa: F401  (text runs; re-exported)
from runners.rollout import env_call, seeded_sampling


def evaluate(
    agent: Agent,
    envs: gym.vector.VectorEnv,
    episodes: int,
    gamma: float,
    greedy: bool,
    seed: int | None = None,
) -> dict[str, float]:
    """Run exactly ``ceil(episodes / N)`` episodes in each of the ``N`` rows (so short
    episodes are not over-represented) and average the first ``episodes`` of them.

    Success is ``info["is_success"]`` at the episode end when the env reports it, else
    "terminated with a positive last reward".
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    n = envs.num_envs
    quota = -(-episodes // n)
    obs, info = envs.reset(seed=seed)
    if hasattr(agent.net, "reset_state"):
        agent.net.reset_state()
    start = np.ones(n, dtype=bool)
    valid = np.ones(n, dtype=bool)
    disc = np.zeros(n)
    undisc = np.zeros(n)
    steps = np.zeros(n, dtype=int)
    done_count = np.zeros(n, dtype=int)
    results: list[tuple[int, float, float, float, int]] = []  # (row order, G_disc, G, success, length)
    with seeded_sampling(seed, agent.device):  # with a seed, sampled evaluation repeats exactly
        while (done_count < quota).any():
            logits, _ = agent.policy_step(obs, start)
            action, _ = Agent.sample(logits, greedy=greedy, mask=mask_from_info(info, n, agent.device))
            obs, reward, term, trunc, info = envs.step(action.cpu().numpy())
            reward = np.asarray(reward, dtype=np.float64)
            disc += np.where(valid, gamma**steps * reward, 0.0)
            undisc += np.where(valid, reward, 0.0)
            steps += valid
            done = np.logical_or(term, trunc) & valid
            success = (np.asarray(info["is_success"], dtype=float) if "is_success" in info
                       else (term & (reward > 0)).astype(float))
            for i in np.flatnonzero(done & (done_count < quota)):
                results.append((int(done_count[i]) * n + i, disc[i], undisc[i], float(success[i]), int(steps[i])))
                done_count[i] += 1
            start = ~valid
            valid = ~done
            disc[done], undisc[done], steps[done] = 0.0, 0.0, 0
    results.sort()
    arr = np.array([r[1:] for r in results[:episodes]])
    return {
        "discounted_return": float(arr[:, 0].mean()),
        "discounted_return_std": float(arr[:, 0].std()),
        "return": float(arr[:, 1].mean()),
        "success_rate": float(arr[:, 2].mean()),
        "length": float(arr[:, 3].mean()),
        "episodes": float(len(arr)),
    }


def optimal_start_value(envs: gym.vector.VectorEnv, gamma: float) -> float | None:
    """``V*(start)`` when the env can compute its exact optimum (CatGrid), else None."""
    try:
        return float(env_call(envs, "optimal_start_value", gamma))
    except AttributeError:
        return None


def evaluate_report(agent: Agent, envs: gym.vector.VectorEnv, episodes: int, gamma: float, seed: int) -> dict[str, Any]:
    """Greedy and sampled evaluation plus ``V*(start)`` and the ratios to it."""
    report: dict[str, Any] = {"v_star_start": optimal_start_value(envs, gamma)}
    for mode in ("greedy", "sampled"):
        res = evaluate(agent, envs, episodes, gamma, greedy=mode == "greedy", seed=seed)
        report[mode] = res
        if report["v_star_start"]:
            res["ratio_to_v_star"] = res["discounted_return"] / report["v_star_start"]
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = []
    v_star = report.get("v_star_start")
    for mode in ("greedy", "sampled"):
        r = report[mode]
        line = (
            f"{mode:>8}: discounted return {r['discounted_return']:8.3f} ± {r['discounted_return_std']:.2f}"
            f" | success {r['success_rate']:.3f} | length {r['length']:.1f} | episodes {int(r['episodes'])}"
        )
        if v_star:
            line += f" | V*(start) {v_star:.3f} | ratio {r['ratio_to_v_star']:.4f}"
        lines.append(line)
    return "\n".join(lines)


@dataclass
class EvalArgs:
    """Evaluate a run written by runners.train (greedy and sampled; CatGrid-v0 next to the exact optimum V*(start))."""

    checkpoint: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """run directory (or its checkpoint/)"""
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
        from runners.validate import check_fields

        check_fields(self, {"episodes": "int>=1", "seed": "int>=0", "num_envs": "int>=1?"})


def parse_args(argv: list[str] | None = None) -> EvalArgs:
    from runners import cli

    return cli.parse(EvalArgs, "runners.evaluate", __doc__, args=argv)


def main(args: EvalArgs | None = None) -> dict[str, Any]:
    from runners.load import load_run, run_config
    from runners.train import make_envs

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


def main_text(args: EvalArgs, cfg: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """Text runs: ``args.episodes`` held-out prompts (IMDB test split), one episode each, all rows at once."""
    import json

    from runners.load import load_run
    from runners.train import make_envs

    split = args.split
    envs = make_envs(cfg, num_envs=args.episodes, eval_mode=True, overrides={"split": split})
    agent, _ = load_run(args.checkpoint, args.device, envs=envs, **overrides)
    hi = cfg.max_new_tokens_range[1] if cfg.max_new_tokens_range else cfg.max_new_tokens
    with torch.no_grad():
        report = evaluate_text(agent, envs, hi, seed=args.seed)
    envs.close()
    report["split"] = split
    print(format_text_report(report))
    run_dir = args.checkpoint.parent if args.checkpoint.name == "checkpoint" else args.checkpoint
    (run_dir / f"eval_text_{split}.json").write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
