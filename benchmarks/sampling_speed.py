"""Benchmark: time of one sampling call (B rows, vocab V) for three categorical samplers.

    python benchmarks/sampling_speed.py --threads 1

- ``float32 cdf``: the former sampler (inverse CDF on a float32 cumulative sum; inexact at large V);
- ``float64 cdf``: :meth:`agents.agent.Agent.sample` (inverse CDF in float64, exact);
- ``gumbel-max``: ``argmax(log π + Gumbel noise)`` (exact, one random number per action);
- ``torch.multinomial`` for reference.

Each includes the float32 log-softmax and the gather of the sampled log-probs. Ratios are to the
float32 sampler, measured in the same process (median of ``--repeats`` calls).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from agents.agent import Agent


def float32_cdf(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    cdf = logp.exp().cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, dtype=cdf.dtype) * cdf[:, -1:]
    a = torch.searchsorted(cdf, u).squeeze(1).clamp_(max=logits.shape[-1] - 1)
    return logp.gather(1, a[:, None]).squeeze(1)


def float64_cdf(logits: torch.Tensor) -> torch.Tensor:
    return Agent.sample(logits)[1]


def gumbel_max(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    a = (logp - torch.empty_like(logp).exponential_().log_()).argmax(-1)
    return logp.gather(1, a[:, None]).squeeze(1)


def multinomial(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    a = torch.multinomial(logp.exp(), 1).squeeze(1)
    return logp.gather(1, a[:, None]).squeeze(1)


@dataclass
class Args:
    batch: int = 64
    vocabs: list[int] = field(default_factory=lambda: [8192, 50257])
    repeats: int = 200
    threads: int = 1


def main() -> None:
    import tyro

    args = tyro.cli(Args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    samplers = {"float32 cdf": float32_cdf, "float64 cdf": float64_cdf, "gumbel-max": gumbel_max,
                "torch.multinomial": multinomial}
    print(f"batch {args.batch}, {args.threads} thread(s), median of {args.repeats} calls")
    for V in args.vocabs:
        logits = torch.randn(args.batch, V) * 3.0
        times = {name: [] for name in samplers}
        for _ in range(args.repeats):  # interleaved, so load changes hit every sampler alike
            for name, fn in samplers.items():
                t0 = time.perf_counter()
                fn(logits)
                times[name].append(time.perf_counter() - t0)
        base = sorted(times["float32 cdf"])[args.repeats // 2]
        for name, ts in times.items():
            med = sorted(ts)[args.repeats // 2]
            print(f"V={V:>6} {name:>18}: {med * 1e3:7.3f} ms  ({med / base:4.2f}x float32 cdf)")


if __name__ == "__main__":
    main()
