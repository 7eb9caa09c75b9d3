"""TensorBoard logging for runners.train with CleanRL's tag names.

``charts/episodic_return`` (for KL-shaped envs the shaped return Σ score - β·KL),
``charts/episodic_length``, ``charts/SPS``, ``charts/learning_rate``,
``losses/{policy_loss,value_loss,entropy,approx_kl,clipfrac,explained_variance}``, and for text
envs TRL's ``objective/scores`` (mean score of finished episodes), ``objective/kl`` (Σ log π_θ − log π_ref per
episode) and ``objective/kl_coef`` (β), and a ``samples`` table. The final evaluation is one text table
(``eval/final``); CatGrid episodes are captioned images (``eval/episode_<k>``). ``TextGen-v0`` also logs
``rewards/<name>``: the mean unweighted score of each reward function over the episodes it applies to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from agents.agent import Agent
from agents.rollout import EpisodeLog
from runners.common.episode_image import episode_image

LOSS_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance", "kl_loss",
             "grad_scale", "skipped_steps")  # the last two: float16 training's gradient scaler


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
    """The scalars of one update: episode statistics of the rollout, SPS, learning rate, losses, group counts."""
    returns = log.shaped_returns or log.returns  # KL-shaped envs: the return the agent maximises
    if returns:
        writer.add_scalar("charts/episodic_return", float(np.mean(returns)), step)
        writer.add_scalar("charts/episodic_length", float(np.mean(log.lengths)), step)
    if log.successes:
        writer.add_scalar("charts/success_rate", float(np.mean(log.successes)), step)
    if log.scores:
        writer.add_scalar("objective/scores", float(np.mean(log.scores)), step)  # TRL's tag names
    if log.kls:
        writer.add_scalar("objective/kl", float(np.mean(log.kls)), step)
    for name, values in log.reward_parts.items():  # TextGen-v0: each reward function, unweighted
        if values:
            writer.add_scalar(f"rewards/{name}", float(np.mean(values)), step)
    writer.add_scalar("charts/SPS", stats.get("SPS", 0.0), step)
    if "learning_rate" in stats:
        writer.add_scalar("charts/learning_rate", stats["learning_rate"], step)
    for key in LOSS_KEYS:
        if key in stats and np.isfinite(stats[key]):
            writer.add_scalar(f"losses/{key}", stats[key], step)
    for key in ("group/episodes", "group/waiting"):  # RLOO/GRPO: episodes learned / waiting for their group
        if key in stats:
            writer.add_scalar(key, stats[key], step)


def update_recent(recent: dict[str, list[float]], log: EpisodeLog, keep: int = 100) -> dict[str, list[float]]:
    """Sliding windows of the last ``keep`` episode returns, scores and KLs (progress bar)."""
    for key, new in (("return", log.shaped_returns or log.returns), ("score", log.scores), ("kl", log.kls)):
        recent[key] = (recent[key] + list(new))[-keep:]
    return recent


def postfix(recent: dict[str, list[float]]) -> dict[str, str]:
    """The progress bar's postfix: the mean of each sliding window."""
    return {k: f"{np.mean(v):.3g}" for k, v in recent.items() if v}


def samples_table(log: EpisodeLog, limit: int = 8) -> str:
    """Markdown table of prompt / response / score of finished episodes."""
    esc = lambda t: t.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    rows = ["|prompt|response|score|", "|-|-|-|"]
    for prompt, response, score in list(zip(log.prompts, log.responses, log.scores))[:limit]:
        rows.append(f"|{esc(prompt)}|{esc(response)}|{score:.3f}|")
    return "\n".join(rows)


def eval_table(report: dict[str, Any]) -> str:
    """Markdown table of a final evaluation: one row per mode (greedy, sampled, ...), one column per metric,
    then the report's scalars (e.g. ``v_star_start``)."""
    modes = {k: v for k, v in report.items() if isinstance(v, dict)}
    scalars = {k: v for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = []
    if modes:
        cols = list(dict.fromkeys(c for res in modes.values() for c, v in res.items()
                                  if not isinstance(v, (list, dict))))
        lines += ["|mode|" + "|".join(cols) + "|", "|-" * (len(cols) + 1) + "|"]
        lines += [f"|{m}|" + "|".join(fmt(res.get(c, "")) for c in cols) + "|" for m, res in modes.items()]
    if scalars:
        lines += ["", "|quantity|value|", "|-|-|"] + [f"|{k}|{fmt(v)}|" for k, v in scalars.items()]
    return "\n".join(lines)


def log_eval(writer: SummaryWriter, step: int, report: dict[str, Any]) -> None:
    """The final evaluation as one text table (``eval/final``): single-point scalars make empty-looking charts."""
    writer.add_text("eval/final", eval_table(report), step)


@dataclass
class RenderedEpisode:
    """The frames of one greedy episode, a caption per frame, and how it ended."""

    frames: list[np.ndarray]
    captions: list[str]
    total: float = 0.0  # undiscounted return
    terminated: bool = False
    done: bool = False  # terminated or truncated within the frame budget
    info: dict[str, Any] = field(default_factory=dict)  # of the last step

    def title(self, k: int, seed: int, max_frames: int) -> str:
        outcome = ("success" if self.info.get("is_success") else "terminated") if self.terminated else (
            "time limit" if self.done else f"first {max_frames - 1} steps")
        return (f"greedy episode {k} (reset seed {seed}): return {self.total:+g} in {len(self.frames) - 1} steps, "
                f"{outcome}")


def render_episode(env: gym.Env, agent: Agent, seed: int, max_frames: int) -> RenderedEpisode:
    """One greedy episode of ``env`` (rgb_array rendering) from ``reset(seed=seed)``, at most ``max_frames`` frames."""
    names = getattr(env.unwrapped, "action_names", None)
    obs, _ = env.reset(seed=seed)
    if hasattr(agent.net, "reset_state"):
        agent.net.reset_state()
    ep, start = RenderedEpisode([env.render()], ["t=0 start"]), True
    while not ep.done and len(ep.frames) < max_frames:
        batch = {key: v[None] for key, v in obs.items()} if isinstance(obs, dict) else np.asarray(obs)[None]
        with torch.no_grad():
            logits, _ = agent.policy_step(batch, np.array([start]))
        start = False
        action = int(logits.argmax(-1)[0])
        obs, reward, ep.terminated, trunc, ep.info = env.step(action)
        ep.total += float(reward)
        ep.frames.append(env.render())
        ep.captions.append(f"t={len(ep.frames) - 1} {names[action] if names else action} {float(reward):+g}")
        ep.done = ep.terminated or trunc
    return ep


def log_rendered_episode(
    writer: SummaryWriter, cfg: Any, agent: Agent, env_kwargs: dict[str, Any], step: int,
    episodes: int = 3, max_frames: int = 50,
) -> bool:
    """Render a few greedy episodes, one captioned image each (``eval/episode_<k>``), if the env draws RGB frames."""
    try:
        env = gym.make(cfg.env, render_mode="rgb_array", **env_kwargs)
    except (TypeError, ValueError):
        return False
    if "rgb_array" not in env.metadata.get("render_modes", []):
        env.close()
        return False
    legend = getattr(env.unwrapped, "render_legend", ())
    for k in range(episodes):
        ep = render_episode(env, agent, cfg.seed + k, max_frames)
        image = episode_image(ep.frames, ep.captions, ep.title(k, cfg.seed + k, max_frames), legend)
        writer.add_image(f"eval/episode_{k}", image, step, dataformats="HWC")
    env.close()
    return True
