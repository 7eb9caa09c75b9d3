"""One command for the day a CUDA machine is at hand: exactness on ``cuda``, the two text benchmarks, NCCL.

    python benchmarks/gpu_check.py                  # about 5 minutes on one GPU
    python benchmarks/gpu_check.py --skip-benchmarks --device cuda:1

1. Exactness on the GPU (tiny models): the rollout's KV-cached policy log-probs equal the update's
   teacher-forced pass; the one-pass reference's per-token rewards equal the per-step mode's (EOS masked before
   ``min_new_tokens``); masked sampling never draws a masked action.
2. ``benchmarks/textgen_speed.py`` and ``benchmarks/vs_trl.py`` (when TRL is installed) at 23M, fp32 and bf16.
3. With 2+ GPUs: a short CatGrid PPO run under ``torchrun`` (2 ranks, NCCL) against one process with the same
   total envs: their greedy returns must agree.

It prints one table (check, measured, tolerance, ok) and exits 1 on any mismatch or failed command. Without
CUDA it says so and exits 0 having checked nothing.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch
import tyro

import envs  # noqa: F401
from agents.agent import Agent, AgentConfig
from agents.batch import chunk_ids, flatten_obs, make_batch
from agents.networks import CausalLMPolicy
from agents.rollout import RolloutCollector
from envs.imdb import load_imdb
from runners.common.tiny_lm import make_tiny_lm, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One line of the table: ``value`` must be <= ``tolerance`` (a command: 0 = it succeeded)."""

    check: str
    value: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.value <= self.tolerance  # NaN fails


@dataclass
class Args:
    device: str = "cuda"
    """A CUDA device: cuda or cuda:N."""
    skip_benchmarks: bool = False
    """Only the exactness checks (and NCCL with 2+ GPUs)."""


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """The arguments; ``--device`` must name a CUDA device (exit status 2 otherwise, like a usage error)."""
    args = tyro.cli(Args, args=argv)
    if not args.device.startswith("cuda"):
        print(f"--device must be cuda or cuda:N (this is the GPU check), got {args.device!r}", file=sys.stderr)
        raise SystemExit(2)
    return args


def table(rows: Sequence[Row]) -> str:
    """The report: one line per check, and the verdict."""
    width = max([len(r.check) for r in rows] + [5])
    lines = [f"{'check':<{width}}  {'measured':>10}  {'tolerance':>10}  ok"]
    lines += [f"{r.check:<{width}}  {r.value:>10.3g}  {r.tolerance:>10.3g}  {'yes' if r.ok else 'NO'}" for r in rows]
    bad = [r.check for r in rows if not r.ok]
    lines.append(f"{len(rows) - len(bad)}/{len(rows)} ok" + (f"; mismatches: {', '.join(bad)}" if bad else ""))
    return "\n".join(lines)


def exit_code(rows: Sequence[Row]) -> int:
    """0 when every row is ok (and there is at least one), else 1."""
    return 0 if rows and all(r.ok for r in rows) else 1


def benchmark_commands(python: str, trl: bool) -> list[tuple[str, list[str]]]:
    """(name, argv) of the benchmark runs: 23M, fp32 and bf16; vs_trl only when TRL is importable."""
    shape = ["--n-layer", "6", "--n-head", "8", "--n-embd", "512"]
    out = []
    for dtype in (None, "bfloat16"):
        extra = [] if dtype is None else ["--autocast-dtype", dtype]
        tag = dtype or "float32"
        out.append((f"textgen_speed 23M {tag}", [python, "benchmarks/textgen_speed.py", *shape, "--repeats", "2",
                                                 "--reward-model-shape", "same", *extra]))
        if trl:
            out.append((f"vs_trl 23M {tag}", [python, "benchmarks/vs_trl.py", *shape, "--iterations", "3", *extra]))
    return out


def ddp_commands(python: str, log_dir: str) -> list[tuple[str, list[str]]]:
    """A 2-rank NCCL CatGrid run and the one-process run with the same total envs."""
    common = ["--env", "CatGrid-v0", "--total-timesteps", "16384", "--seed", "0", "--device", "cuda",
              "--log-dir", log_dir, "--no-progress"]
    return [("torchrun 2 ranks", [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                                  "-m", "runners.train", *common, "--num-envs", "8", "--run-name", "ddp"]),
            ("one process", [python, "-m", "runners.train", *common, "--num-envs", "16", "--run-name", "single"])]


def run_command(name: str, argv: list[str]) -> Row:
    print(f"$ {' '.join(argv)}", flush=True)
    done = subprocess.run(argv, cwd=ROOT)
    return Row(f"runs: {name}", float(done.returncode != 0), 0.0)


def exactness(device: str) -> list[Row]:
    """The three exactness checks on ``device`` with a tiny GPT-2 and tokenizer (no download)."""
    texts = [r["text"] for r in load_imdb("train", limit=300, seed=0)]
    tok = train_tokenizer(texts, vocab_size=8192)
    lm = make_tiny_lm(tok, seed=0, n_layer=2, n_head=4, n_embd=128, n_positions=256).eval()
    results = {}
    for mode in ("per_step", "one_pass"):
        torch.manual_seed(0)
        venv = gym.make_vec("TextGen-IMDB-v0", num_envs=8, vectorization_mode="vector_entry_point",
                            model=copy.deepcopy(lm), tokenizer=tok, reward_model=lambda ts: [len(t) / 100 for t in ts],
                            dataset=texts, max_new_tokens=6, min_new_tokens=3, kl_coef=0.2, device=device,
                            ref_mode=mode)
        agent = Agent(CausalLMPolicy(copy.deepcopy(lm)), AgentConfig(gamma=1.0))
        collector = RolloutCollector(gym.wrappers.vector.RecordEpisodeStatistics(venv), agent, 9, seed=0)
        results[mode] = [collector.collect()[0] for _ in range(2)], agent
    (per_step, agent), (one_pass, _) = results["per_step"], results["one_pass"]
    reward_err = max(float((a.rewards - b.rewards).abs().max()) for a, b in zip(per_step, one_pass))
    ro = per_step[-1]
    flat = lambda x: x.transpose(0, 1).reshape(-1)  # noqa: E731
    chunk = torch.as_tensor(chunk_ids(ro.episode_start.cpu().numpy(), ro.valid.cpu().numpy()), device=ro.actions.device)
    batch = make_batch(flatten_obs(ro.obs), flat(ro.actions), chunk, torch.arange(chunk.numel(), device=chunk.device))
    with torch.no_grad():
        logits, _ = agent.net.evaluate(batch)
    logp = torch.log_softmax(logits, -1).gather(1, batch.actions[:, None]).squeeze(1)
    valid = flat(ro.valid)
    logp_err = float((logp[valid] - flat(ro.logprobs)[valid]).abs().max())
    logits = torch.zeros(4096, 16, device=device)
    logits[:, 3] = 20.0  # the favourite action is the masked one
    mask = torch.ones(4096, 16, dtype=torch.bool, device=device)
    mask[:, 3] = False
    action, _ = Agent.sample(logits, mask=mask)
    masked_draws = float((action == 3).sum())
    return [Row("one-pass vs per-step reward (max abs)", reward_err, 1e-4),
            Row("rollout vs teacher-forced log-prob (max abs)", logp_err, 1e-4),
            Row("masked sampling: masked actions drawn (count)", masked_draws, 0.0)]


def ddp_rows(python: str) -> list[Row]:
    with tempfile.TemporaryDirectory() as log_dir:
        rows = [run_command(name, argv) for name, argv in ddp_commands(python, log_dir)]
        if all(r.ok for r in rows):
            ratio = [json.loads((Path(log_dir) / run / "eval.json").read_text())["greedy"]["ratio_to_v_star"]
                     for run in ("ddp", "single")]
            rows.append(Row("2 ranks vs 1 process greedy ratio to V* (abs diff)", abs(ratio[0] - ratio[1]), 0.05))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check needs CUDA: no CUDA device is visible here, so nothing was checked.")
        return 0
    rows = exactness(args.device)
    if not args.skip_benchmarks:
        try:
            import trl  # noqa: F401
            have_trl = True
        except ImportError:
            have_trl = False
        rows += [run_command(name, cmd) for name, cmd in benchmark_commands(sys.executable, have_trl)]
    if torch.cuda.device_count() >= 2:
        rows += ddp_rows(sys.executable)
    print(table(rows))
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
