"""Shared helpers of the text benchmarks: the machine's matmul peak, achieved GFLOP/s, forward-pass counts.

Pure functions (tested in ``tests/integration/test_bench_helpers.py``) except :func:`matmul_peak_gflops`, which
times ``torch.mm``. FLOPs are counted as ``2 · params · tokens`` per forward (``6 ·`` for forward + backward),
the usual dense-transformer estimate (attention over 24-token contexts is negligible next to it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def parse_shape(text: str, same: tuple[int, int, int]) -> tuple[int, int, int]:
    """``"LxHxD"`` (layers x heads x width) -> (L, H, D); ``"same"`` -> ``same`` (the policy's shape)."""
    if text == "same":
        return same
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"a model shape is 'same' or LAYERSxHEADSxWIDTH, e.g. 6x8x512; got {text!r}.")
    n_layer, n_head, n_embd = (int(p) for p in parts)
    if n_embd % n_head:
        raise ValueError(f"shape {text!r}: the width {n_embd} must be a multiple of the heads {n_head}.")
    return n_layer, n_head, n_embd


def forward_gflop(params: int, tokens: int, backward: bool = False) -> float:
    """GFLOP of one forward (``backward``: forward + backward) over ``tokens`` tokens of a ``params`` model."""
    return (6 if backward else 2) * params * tokens / 1e9


def gflops(gflop: float, seconds: float) -> float:
    """Achieved GFLOP/s (0 when nothing was timed)."""
    return gflop / seconds if seconds > 0 else 0.0


def matmul_peak_gflops(
    dtype: torch.dtype = torch.float32, n: int = 2048, seconds: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Best GFLOP/s of an ``n x n`` ``torch.mm`` in ``dtype`` over about ``seconds`` (the machine's peak), timed
    with ``clock`` (pass the clock the phases are timed with: wall, or process CPU time on a loaded machine)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = clock()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / 1e9 / max(clock() - t0, 1e-9))
    return best


def format_passes(counts: dict[str, dict[str, int]]) -> str:
    """``{"policy": {"decode": 16, "prefill": 1}, ...}`` -> ``"policy 16 decode + 1 prefill, ..."`` (zeros omitted)."""
    out = []
    for model, kinds in counts.items():
        parts = [f"{n} {kind}" for kind, n in kinds.items() if n]
        out.append(f"{model} {' + '.join(parts) if parts else 'none'}")
    return ", ".join(out)


def diff_counts(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Per-key difference of two counter snapshots (the passes of one rollout)."""
    return {k: after[k] - before.get(k, 0) for k in after}
