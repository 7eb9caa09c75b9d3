"""Held-out evaluation of a text policy: score with a confidence interval, KL, length, diversity, samples.

:func:`evaluate_text` runs the first episode of every row of a text vector env (one held-out prompt
per row, sampling at temperature 1 from the policy, under the env's action mask) and reports

- ``score_mean``, ``score_std`` (sample std), ``score_sem`` (standard error) and ``score_ci95``
  (mean ± 1.96·sem, the normal approximation, fine for the hundreds of prompts used here);
- ``kl_mean``: the mean per-episode ``Σ_t (log π_θ(a_t|s_t) − log π_ref(a_t|s_t))``, the sample
  estimate of KL(π_θ ‖ π_ref) on these prompts (0 for the reference policy itself);
- ``tokens_mean`` (tokens generated, EOS included), ``chars_mean`` (characters of the response,
  special tokens removed) and ``eos_rate`` (share of responses that ended with EOS);
- ``distinct_1`` / ``distinct_2``: distinct n-grams / all n-grams over the whitespace words of all
  responses (Li et al. 2016); low values mean repetitive, collapsed outputs;
- ``samples``: prompt, response, score, KL per row.

With the same ``seed`` two policies see the same prompts in the same rows, so "before" and "after"
numbers are paired (see :func:`paired_gain`); the seed also seeds the policy's sampling, so the same
policy and seed give the same responses. :func:`format_text_report` prints the table and samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from agents.agent import Agent
from agents.env_access import env_attr, seeded_sampling
from agents.rollout import RolloutCollector


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / total n-grams over the whitespace words of ``texts`` (0 when there are none)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.split()
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_ci(values: Sequence[float], z: float = 1.96) -> dict[str, float]:
    """Mean, sample std (ddof 1), standard error and the ``z`` normal interval of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to summarise")
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    sem = std / math.sqrt(x.size)
    mean = float(x.mean())
    return {"mean": mean, "std": std, "sem": sem, "ci95": (mean - z * sem, mean + z * sem)}


def paired_gain(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Score gain after − before on the same prompts (row by row), its standard error and gain / sem."""
    b = np.array([s["score"] for s in before["samples"]])
    a = np.array([s["score"] for s in after["samples"]])
    if [s["prompt"] for s in before["samples"]] != [s["prompt"] for s in after["samples"]]:
        raise ValueError("before and after saw different prompts; evaluate both with the same env seed")
    d = mean_ci(a - b)
    return {"gain": d["mean"], "gain_sem": d["sem"], "gain_in_sems": d["mean"] / d["sem"] if d["sem"] > 0 else math.inf}


def evaluate_text(agent: Agent, envs: gym.vector.VectorEnv, max_new_tokens: int, seed: int,
                  eos_token: str | None = None) -> dict[str, Any]:
    """The first episode of every row of ``envs`` (see the module docstring for the returned numbers).

    ``max_new_tokens`` is the longest an episode can be (the upper end of a length range), so every row
    finishes its first episode within that many steps. ``eos_token`` (default: the env tokenizer's) is
    stripped from responses before counting characters and words.
    """
    if eos_token is None:
        try:
            eos_token = env_attr(envs, "tokenizer").eos_token
        except AttributeError:
            eos_token = None
    collector = RolloutCollector(envs, agent, num_steps=max_new_tokens, seed=seed, evaluation=True)  # any algo
    with seeded_sampling(seed, agent.device):  # the policy's samples too: same seed, same responses, same report
        _, log = collector.collect()
    kls = log.kls if len(log.kls) == len(log.scores) else [math.nan] * len(log.scores)
    tokens = log.response_tokens if len(log.response_tokens) == len(log.scores) else [math.nan] * len(log.scores)
    first: dict[int, dict[str, Any]] = {}  # row -> its first episode (rows may finish a second, shorter one)
    for row, p, r, sc, kl, n in zip(log.score_rows, log.prompts, log.responses, log.scores, kls, tokens):
        first.setdefault(row, {"prompt": p, "response": r, "score": float(sc), "kl": float(kl), "tokens": n})
    if len(first) < envs.num_envs:
        raise RuntimeError(f"only {len(first)} of {envs.num_envs} rows finished an episode in {max_new_tokens} "
                           "steps; pass the env's largest max_new_tokens")
    samples = [first[row] for row in sorted(first)]
    clean = [s["response"].replace(eos_token, "") if eos_token else s["response"] for s in samples]
    score = mean_ci([s["score"] for s in samples])
    return {
        "episodes": len(samples),
        "score_mean": score["mean"], "score_std": score["std"], "score_sem": score["sem"], "score_ci95": score["ci95"],
        "kl_mean": float(np.mean([s["kl"] for s in samples])),
        "tokens_mean": float(np.mean([s["tokens"] for s in samples])),
        "chars_mean": float(np.mean([len(c) for c in clean])),
        "eos_rate": float(np.mean([bool(eos_token) and s["response"].endswith(eos_token) for s in samples])),
        "distinct_1": distinct_n(clean, 1), "distinct_2": distinct_n(clean, 2),
        "samples": samples,
    }


def metrics_row(res: dict[str, Any]) -> str:
    """One markdown table row (without the label column) of :data:`METRICS_HEADER`'s columns."""
    lo, hi = res["score_ci95"]
    return (f"{res['score_mean']:.3f} ± {res['score_sem']:.3f} | [{lo:.3f}, {hi:.3f}] | {res['score_std']:.3f} | "
            f"{res['kl_mean']:.3f} | {res['tokens_mean']:.1f} | {res['chars_mean']:.1f} | {res['eos_rate']:.2f} | "
            f"{res['distinct_1']:.3f} | {res['distinct_2']:.3f} |")


METRICS_HEADER = ("| mean score ± s.e. | 95% CI | std | KL to ref (nats/episode) | tokens | chars | EOS rate | "
                  "distinct-1 | distinct-2 |")


def table_head(label: str = "") -> list[str]:
    """The header and separator lines of a metrics table whose first column is ``label``."""
    return [f"| {label} " + METRICS_HEADER, "|-" * METRICS_HEADER.count("|") + "|"]


def format_text_report(res: dict[str, Any], samples: int = 8) -> str:
    """Markdown: the metrics table and a samples table."""
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [f"Held-out prompts: {res['episodes']}", "", *table_head(), "| policy | " + metrics_row(res), "",
             "| prompt | response | score | KL |", "|-|-|-|-|"]
    for s in res["samples"][:samples]:
        lines.append(f"| {esc(s['prompt'])} | {esc(s['response'])} | {s['score']:.2f} | {s['kl']:.2f} |")
    return "\n".join(lines)
