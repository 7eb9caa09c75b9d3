"""An exactly enumerated two-decision toy: where does each RLOO/GRPO variant's expected update vanish?

    python tests/agents/group_toy.py        # prints the fixed points of every variant (docs/algorithms.md)

One logit θ, ``p = π(1)``, ``∇_θ log π(x) = x - p``. An episode decides ``a``: ``a = 0`` ends it (1 step) with
score 1 or 0 with probability ½ each ("binary") or score ½ ("graded"); ``a = 1`` asks a second decision ``b``
(2 steps): ``b = 0`` scores 1, ``b = 1`` scores 0. So ``J(p) = (1-p)/2 + p(1-p)``, maximal at ``p* = 1/4``, and
long episodes are worth more than short ones in some outcomes and less in others. The expected update of a
group of k episodes is summed exactly over every outcome vector, with the advantages of :mod:`agents.group`
and the aggregation of ``loss_aggregation``; a variant's fixed point is the p where it is 0 (bisection). An
unbiased variant's fixed point is p*.
"""

from __future__ import annotations

import itertools

import torch

from agents import group

OPTIMUM = 0.25
VARIANTS = {  # name: (scale_rewards, loss_aggregation); scale_rewards=False is RLOO's advantage times (k-1)/k
    "RLOO / Dr. GRPO (no std, constant)": (False, "constant"),
    "no std, token mean": (False, "token_mean"),
    "no std, sequence mean": (False, "sequence_mean"),
    "std, constant": (True, "constant"),
    "GRPO default (std, token mean)": (True, "token_mean"),
    "original GRPO (std, sequence mean)": (True, "sequence_mean"),
}


def _outcomes(toy: str) -> tuple[list[tuple[float, float, float]], list]:
    """Per outcome of one episode: (score, steps, Σ_t ∇log π), and its probability as a function of p."""
    short = [(1.0, 1.0, "-p"), (0.0, 1.0, "-p")] if toy == "binary" else [(0.5, 1.0, "-p")]
    n = len(short)
    rows = [*short, (1.0, 2.0, "1-2p"), (0.0, 2.0, "2-2p")]
    prob = [lambda p: (1 - p) / n] * n + [lambda p: p * (1 - p), lambda p: p * p]
    return rows, prob


def expected_update(p: float, toy: str, variant: str, k: int) -> float:
    """E[dθ] of one group of k episodes (ascent direction, up to a positive constant)."""
    scale, aggregation = VARIANTS[variant]
    rows, prob = _outcomes(toy)
    grad_of = {"-p": -p, "1-2p": 1 - 2 * p, "2-2p": 2 - 2 * p}
    combos = torch.tensor(list(itertools.product(range(len(rows)), repeat=k)))  # (C, k) outcome of each episode
    score = torch.tensor([r[0] for r in rows], dtype=torch.float64)[combos]  # (C, k)
    length = torch.tensor([r[1] for r in rows], dtype=torch.float64)[combos]
    grad = torch.tensor([grad_of[r[2]] for r in rows], dtype=torch.float64)[combos]
    weight = torch.tensor([f(p) for f in prob], dtype=torch.float64)[combos].prod(1)  # (C,)
    ids = torch.arange(combos.shape[0]).repeat_interleave(k)  # one group per outcome vector
    adv = group.grpo_advantages(score.reshape(-1), ids, 1e-4, scale)[0].view_as(score)  # (C, k)
    contrib = grad * adv
    if aggregation == "token_mean":
        per_group = contrib.sum(1) / length.sum(1)
    elif aggregation == "sequence_mean":
        per_group = (contrib / length).sum(1) / k
    else:
        per_group = contrib.sum(1) / k
    return float((weight * per_group).sum())


def fixed_point(toy: str, variant: str, k: int) -> float:
    lo, hi = 1e-3, 1 - 1e-3
    f_lo = expected_update(lo, toy, variant, k)
    for _ in range(30):
        mid = (lo + hi) / 2
        f_mid = expected_update(mid, toy, variant, k)
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return (lo + hi) / 2


if __name__ == "__main__":
    for toy in ("binary", "graded"):
        print(f"\n{toy}: optimum p* = {OPTIMUM}")
        print(f"{'variant':40s}" + "".join(f"k={k:<7d}" for k in (2, 4, 8)))
        for variant in VARIANTS:
            print(f"{variant:40s}" + "".join(f"{fixed_point(toy, variant, k):<9.4f}" for k in (2, 4, 8)))
