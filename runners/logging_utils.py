"""TensorBoard logging for runners.train with CleanRL's tag names.

``charts/episodic_return`` (for KL-shaped envs the shaped return Σ score - β·KL),
``charts/episodic_length``, ``charts/SPS``, ``charts/learning_rate``,
``losses/{policy_loss,value_loss,entropy,approx_kl,clipfrac,explained_variance}``, and for text
envs ``env/score_mean``, ``objective/kl``, ``objective/kl_coef``, ``objective/entropy`` and a
``samples`` table.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from agents.agent import Agent
from runners.rollout import EpisodeLog

LOSS_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance", "kl_k3")


def config_table(cfg: dict[str, Any], prefix: str = "") -> str:
    """A flat markdown table of a (nested) config dict."""
    rows = []
    for key, value in cfg.items():
        if isinstance(value, dict):
            rows.extend(config_table(value, f"{prefix}{key}.").splitlines()[2:])
        else:
            rows.append(f"|{prefix}{key}|{value}|")
    return "|param|value|\n|-|-|\n" + "\n".join(rows)


def log_update(writer: SummaryWriter, step: int, stats: dict[str, float], log: EpisodeLog) -> None:
    returns = log.shaped_returns or log.returns  # KL-shaped envs: the return the agent maximises
    if returns:
        writer.add_scalar("charts/episodic_return", float(np.mean(returns)), step)
        writer.add_scalar("charts/episodic_length", float(np.mean(log.lengths)), step)
    if log.successes:
        writer.add_scalar("charts/success_rate", float(np.mean(log.successes)), step)
    if log.scores:
        writer.add_scalar("env/score_mean", float(np.mean(log.scores)), step)
    if log.kls:
        writer.add_scalar("objective/kl", float(np.mean(log.kls)), step)
        if "entropy" in stats:
            writer.add_scalar("objective/entropy", stats["entropy"], step)
    writer.add_scalar("charts/SPS", stats.get("SPS", 0.0), step)
    if "learning_rate" in stats:
        writer.add_scalar("charts/learning_rate", stats["learning_rate"], step)
    for key in LOSS_KEYS:
        if key in stats and np.isfinite(stats[key]):
            writer.add_scalar(f"losses/{key}", stats[key], step)
    for key in ("group/episodes", "group/skipped_alone"):  # RLOO/GRPO: episodes used / alone in their group
        if key in stats:
            writer.add_scalar(key, stats[key], step)


def update_recent(recent: dict[str, list[float]], log: EpisodeLog, keep: int = 100) -> dict[str, list[float]]:
    """Sliding windows of the last ``keep`` episode returns, scores and KLs (progress bar)."""
    for key, new in (("return", log.shaped_returns or log.returns), ("score", log.scores), ("kl", log.kls)):
        recent[key] = (recent[key] + list(new))[-keep:]
    return recent


def postfix(recent: dict[str, list[float]]) -> dict[str, str]:
    return {k: f"{np.mean(v):.3g}" for k, v in recent.items() if v}


def samples_table(log: EpisodeLog, limit: int = 8) -> str:
    """Markdown table of prompt / response / score of finished episodes."""
    esc = lambda t: t.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    rows = ["|prompt|response|score|", "|-|-|-|"]
    for prompt, response, score in list(zip(log.prompts, log.responses, log.scores))[:limit]:
        rows.append(f"|{esc(prompt)}|{esc(response)}|{score:.3f}|")
    return "\n".join(rows)


def log_eval(writer: SummaryWriter, step: int, report: dict[str, Any]) -> None:
    for mode in ("greedy", "sampled"):
        for key, value in report[mode].items():
            writer.add_scalar(f"eval/{mode}_{key}", value, step)
    if report.get("v_star_start"):
        writer.add_scalar("eval/v_star_start", report["v_star_start"], step)


def log_rendered_episode(
    writer: SummaryWriter, cfg: Any, agent: Agent, env_kwargs: dict[str, Any], step: int,
    episodes: int = 3, max_frames: int = 50,
) -> bool:
    """Render a few greedy episodes as image strips (``eval/episode_<k>``) if the env draws RGB frames."""
    try:
        env = gym.make(cfg.env, render_mode="rgb_array", **env_kwargs)
    except (TypeError, ValueError):
        return False
    if "rgb_array" not in env.metadata.get("render_modes", []):
        env.close()
        return False
    for k in range(episodes):
        obs, _ = env.reset(seed=cfg.seed + k)
        if hasattr(agent.net, "reset_state"):
            agent.net.reset_state()
        frames, done, start = [env.render()], False, True
        while not done and len(frames) < max_frames:
            batch = {key: v[None] for key, v in obs.items()} if isinstance(obs, dict) else np.asarray(obs)[None]
            with torch.no_grad():
                logits, _ = agent.policy_step(batch, np.array([start]))
            start = False
            obs, _, term, trunc, _ = env.step(int(logits.argmax(-1)[0]))
            frames.append(env.render())
            done = term or trunc
        writer.add_images(f"eval/episode_{k}", np.stack(frames), step, dataformats="NHWC")
    env.close()
    return True
