"""Compare PPO, REINFORCE, RLOO and GRPO over several seeds in one TensorBoard log dir, plus a PNG plot.

    python -m runners.compare --env CatGrid-v0 --algos ppo reinforce rloo grpo --seeds 0 1 2
    tensorboard --logdir runs/compare__CatGrid-v0__<time>

Every run is an ordinary ``runners.train`` run named ``<env>__<algo>__<seed>`` inside the
comparison directory, so TensorBoard overlays them on one chart. ``returns.png`` shows the
mean ± std over seeds of ``charts/episodic_return`` (undiscounted, sampled training episodes)
against env steps next to the exact optima of that same quantity (CatGrid-v0), and ``summary.json`` holds the
final evaluations (greedy discounted return next to the discounted ``V*(start)``). TensorBoard also gets the
comparison by algorithm: runs ``by_algorithm/<algo>`` hold the mean ± std over seeds of every ``charts/`` scalar
(the CUSTOM SCALARS tab draws one margin chart per metric, one band per algorithm) and ``by_algorithm`` holds
``returns.png`` (IMAGES tab).
"""

from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.algos import ALGO_NAMES
from agents.validate import check_fields
from envs.catgrid_optimum import optimal_start_return
from runners.common import cli
from runners.common.run_spec import env_kwargs
from runners.train import TrainConfig, preset, train


@dataclass(frozen=True)
class CompareConfig:
    """Train each algorithm over several seeds into one directory (TensorBoard overlays them) and plot them."""

    env: str = "CatGrid-v0"
    algos: list[str] = field(default_factory=lambda: ["ppo", "reinforce", "rloo", "grpo"])
    """the algorithms to compare (any of the registry's, e.g. rebn); default the four classic ones"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    log_dir: str = "runs"
    name: str | None = None
    """default: compare__<env>__<unix time>"""
    total_timesteps: int | None = None
    """override every run's budget (default: each algorithm's preset)"""
    map_name: str = "5x5"
    jobs: int = 2
    """runs in parallel (each uses one torch thread)"""
    eval_episodes: int = 500
    tag: str = "charts/episodic_return"

    def __post_init__(self) -> None:
        seeds_ok = all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in self.seeds)
        check_fields(self, {"total_timesteps": "int>=1?", "jobs": "int>=1", "eval_episodes": "int>=0"}, extra={
            "seeds must list at least one seed (e.g. --seeds 0 1 2)": lambda: len(self.seeds) > 0,
            f"seeds must be integers >= 0, got {list(self.seeds)}": lambda: seeds_ok,
            f"algos must list at least one of {ALGO_NAMES}": lambda: len(self.algos) > 0,
            f"algos must be among {ALGO_NAMES}, got {list(self.algos)}":
                lambda: all(a in ALGO_NAMES for a in self.algos),
        })
    plot: bool = True
    """write returns.png (needs matplotlib: pip install 'rlhf-gym[plot]')"""


def _run(cfg: TrainConfig) -> dict[str, Any]:
    return train(cfg)


def run_configs(cc: CompareConfig, out: Path) -> list[TrainConfig]:
    """One ``runners.train`` config per algorithm and seed, each run named ``<env>__<algo>__<seed>`` in ``out``."""
    budget = {"total_timesteps": cc.total_timesteps} if cc.total_timesteps else {}
    return [dataclasses.replace(preset(cc.env, algo), seed=seed, log_dir=str(out), run_name=f"{cc.env}__{algo}__{seed}",
                                map_name=cc.map_name, eval_episodes=cc.eval_episodes, progress=False, threads=1,
                                **budget)
            for algo in cc.algos for seed in cc.seeds]


def read_curve(run_dir: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a scalar tag from a run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return np.zeros(0), np.zeros(0)
    events = acc.Scalars(tag)
    return np.array([e.step for e in events], dtype=float), np.array([e.value for e in events])


def aggregate(curves: list[tuple[np.ndarray, np.ndarray]],
              points: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolate curves onto a common step grid; returns (grid, mean, std)."""
    curves = [c for c in curves if len(c[0])]
    if not curves:
        raise ValueError("no data points to aggregate: did the runs log any finished episode?")
    hi = min(c[0][-1] for c in curves)
    lo = max(c[0][0] for c in curves)
    grid = np.linspace(lo, hi, points)
    ys = np.stack([np.interp(grid, s, v) for s, v in curves])
    return grid, ys.mean(0), ys.std(0)


def scalar_tags(run_dir: Path) -> set[str]:
    """The scalar tags of a run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return set(acc.Tags().get("scalars", []))


def log_by_algorithm(out: Path, cc: CompareConfig, png: Path | None) -> list[str]:
    """TensorBoard runs ``by_algorithm/<algo>``: ``mean/<tag>`` and its ``/lower`` / ``/upper`` (mean ∓ std over
    seeds) for every ``charts/`` tag all runs logged, a custom-scalars margin chart per tag, and ``returns.png``
    as an image of the run ``by_algorithm``. Returns the tags logged."""
    from torch.utils.tensorboard import SummaryWriter

    dirs = {algo: [out / f"{cc.env}__{algo}__{seed}" for seed in cc.seeds] for algo in cc.algos}
    tags = sorted(t for t in set.intersection(*(scalar_tags(d) for ds in dirs.values() for d in ds))
                  if t.startswith("charts/"))
    with SummaryWriter(str(out / "by_algorithm")) as top:
        top.add_custom_scalars({"by algorithm: mean ± std over seeds": {
            t: ["Margin", [f"mean/{t}", f"mean/{t}/lower", f"mean/{t}/upper"]] for t in tags}})
        if png is not None:
            from PIL import Image

            top.add_image("returns.png", np.asarray(Image.open(png).convert("RGB")), 0, dataformats="HWC")
    for algo, runs in dirs.items():
        with SummaryWriter(str(out / "by_algorithm" / algo)) as writer:
            for tag in tags:
                grid, mean, std = aggregate([read_curve(d, tag) for d in runs])
                for step, m, sd in zip(grid, mean, std):
                    for name, value in ((tag, m), (f"{tag}/lower", m - sd), (f"{tag}/upper", m + sd)):
                        writer.add_scalar(f"mean/{name}", value, int(step))
    return tags


def require_matplotlib() -> None:
    """matplotlib is the optional ``[plot]`` extra: fail before training, with the fix, when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(
            "runners.compare draws returns.png with matplotlib, which is not installed: "
            "pip install 'rlhf-gym[plot]' (or pass --no-plot; TensorBoard logs and summary.json need no matplotlib)."
        ) from None


def reference_lines(cfg: TrainConfig, tag: str) -> list[tuple[float, str]]:
    """Exact optima of the SAME quantity as ``tag`` (CatGrid-v0, undiscounted ``charts/episodic_return`` under the
    time limit): the best any policy can do, and what the discounted-optimal policy π*_γ of the runs' γ gets."""
    if cfg.env != "CatGrid-v0" or tag != "charts/episodic_return":
        return []
    import gymnasium as gym

    kwargs, horizon, gamma = env_kwargs(cfg), gym.spec(cfg.env).max_episode_steps, cfg.agent.gamma
    return [(optimal_start_return(kwargs, horizon), f"max E[return] of any policy in {horizon} steps (exact)"),
            (optimal_start_return(kwargs, horizon, gamma=gamma),
             f"E[return] of π*(γ={gamma:g}) in {horizon} steps (exact)")]


def plot(out: Path, cc: CompareConfig, references: list[tuple[float, str]]) -> Path:
    """``returns.png``: mean ± std over seeds of ``cc.tag`` per algorithm, with the ``references`` lines."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for algo in cc.algos:
        curves = [read_curve(out / f"{cc.env}__{algo}__{seed}", cc.tag) for seed in cc.seeds]
        grid, mean, std = aggregate(curves)
        ax.plot(grid, mean, label=f"{algo} (n={len(cc.seeds)})")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.25)
    for (value, label), style in zip(references, ("--", ":")):
        ax.axhline(value, color="k", ls=style, lw=1, label=f"{label}: {value:.2f}")
    ax.set_xlabel("env steps")
    what = "undiscounted return of training episodes" if cc.tag == "charts/episodic_return" else cc.tag
    ax.set_ylabel(f"{what}\n(mean ± std over seeds)")
    ax.set_title(f"{cc.env}: {' vs '.join(a.upper() for a in cc.algos)}")
    ax.legend()
    fig.tight_layout()
    path = out / "returns.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None = None) -> CompareConfig:
    """The command line of ``python -m runners.compare``."""
    return cli.parse(CompareConfig, "runners.compare", __doc__, args=argv)


def main(cc: CompareConfig | None = None) -> dict[str, Any]:
    """CLI entry point: ``python -m runners.compare --help``."""
    cc = cc or parse_args()
    if cc.plot:
        require_matplotlib()
    out = Path(cc.log_dir) / (cc.name or f"compare__{cc.env}__{int(time.time())}")
    cfgs = run_configs(cc, out)
    taken = [c.run_name for c in cfgs if (out / c.run_name).is_dir() and any((out / c.run_name).iterdir())]
    if taken:  # refuse before training anything (each run would refuse on its own, mid-comparison)
        raise FileExistsError(f"{out} already holds runs {taken}; pick another --name (runs never append to old "
                              "TensorBoard events)")
    out.mkdir(parents=True, exist_ok=True)
    if cc.jobs > 1:
        with ProcessPoolExecutor(max_workers=cc.jobs) as pool:
            results = list(pool.map(_run, cfgs))
    else:
        results = [_run(c) for c in cfgs]
    summary = {f"{c.algo}__{c.seed}": r.get("eval", {}) | {"wall_time": r["wall_time"], "global_step": r["global_step"]}
               for c, r in zip(cfgs, results)}
    png = plot(out, cc, reference_lines(cfgs[0], cc.tag)) if cc.plot else None
    log_by_algorithm(out, cc, png)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for key, res in summary.items():
        if "greedy" in res:
            g = res["greedy"]
            print(f"{key:>16}: greedy discounted return {g['discounted_return']:.2f} "
                  f"(ratio to V* {g.get('ratio_to_v_star', float('nan')):.4f}), success {g['success_rate']:.3f}, "
                  f"{res['global_step']} steps in {res['wall_time']:.0f}s")
    print(f"TensorBoard: tensorboard --logdir {out}" + (f"\nplot: {png}" if png else ""))
    return {"dir": str(out), "summary": summary, "plot": str(png) if png else None}


if __name__ == "__main__":
    main()
