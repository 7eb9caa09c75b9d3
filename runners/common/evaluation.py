"""Evaluation of an agent on a vector env: greedy and sampled discounted return and success rate, with
CatGrid's exact optimum ``V*(start)`` beside them (:func:`evaluate_report`)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from agents.agent import Agent
from agents.env_access import env_call, seeded_sampling
from agents.masking import mask_from_info
from runners.common.text_eval import evaluate_text, format_text_report  # noqa: F401  (text runs; re-exported)


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
            action, _ = Agent.sample(logits, greedy=greedy, mask=mask_from_info(info, n, agent.device),
                                     **agent.config.sampling)  # the policy as it samples (temperature, top-k, top-p)
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


