"""TRL 1.12's ``PPOTrainer`` against this project on the same PPO workload, interleaved in one process.

    pip install -e ".[bench]"        # trl==1.12.0, the last TRL with PPO
    python benchmarks/vs_trl.py --threads 2 --iterations 4                                       # tiny 2x4x128
    python benchmarks/vs_trl.py --threads 2 --n-layer 6 --n-head 8 --n-embd 512 --iterations 5   # 23M
    python benchmarks/vs_trl.py --threads 2 --n-layer 12 --n-head 12 --n-embd 768 --batch 32 \\
        --vocab-size 50257                                                                       # 124M

Workload (both systems): a randomly initialised GPT-2 policy of the given shape (vocab 8192, the tokenizer
``textgen_speed.py`` trains), a reward model OF THE SAME SHAPE (a GPT-2 sequence classifier, as the full
classifier of TRL's own example; ``--reward-model-shape`` changes it), ``--batch`` prompts of ``--prompt-len``
tokens, ``--new-tokens`` sampled tokens (temperature 1, no stop token), one PPO epoch of 4 minibatches. TRL also
trains its separate value model (a classifier of the policy's shape, as in its example); this project's value
head shares the policy trunk.

Interleaving: a ``TrainerCallback`` runs one iteration of this project after each of TRL's iterations, so both
see the same machine load; the first iteration of each is a warm-up. Printed: tokens/s of each, their ratio
(steady state: the median of the per-iteration ratios), each one's rollout / update split, the achieved GFLOP/s
next to the machine's ``torch.mm`` peak, and this project's forward passes per rollout.
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GPT2ForSequenceClassification

# isort: off
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts (benchmarks/ is not a package)
import textgen_speed  # noqa: E402  (its Timers read its module-level clock)
from perf import DTYPES, format_passes, forward_gflop, gflops, matmul_peak_gflops, parse_shape  # noqa: E402
from textgen_speed import CLOCKS, Timers, make_iteration, setup  # noqa: E402
from textgen_speed import Args as SpeedArgs  # noqa: E402
# isort: on


@dataclass
class Args:
    threads: int = 2
    batch: int = 64
    prompt_len: int = 8
    new_tokens: int = 16
    iterations: int = 4
    """PPO iterations of each system (the first is a warm-up)."""
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    vocab_size: int | None = None
    """The policy's vocabulary (default: the tokenizer's 8192), e.g. GPT-2's 50257; TRL's reward and value models
    read the policy's ids, so they get as many embedding rows (this project's reward model reads the text)."""
    reward_model_shape: str = "same"
    """"same" (the policy's shape) or LAYERSxHEADSxWIDTH."""
    num_minibatches: int = 4
    seed: int = 0
    autocast_dtype: str | None = None
    """This project only: None (float32) or "bfloat16" for its policy (rollout and update), reference and reward
    model (TRL runs fp32)."""
    clock: str = "auto"
    """"wall", "cpu" (process CPU time: immune to waiting for a core on a loaded machine, meaningful with
    --threads 1) or "auto" (cpu with --threads 1, else wall)."""


def trl_config_kwargs(batch: int, num_minibatches: int, new_tokens: int, iterations: int) -> dict[str, Any]:
    """``PPOConfig`` arguments for one rollout of ``batch`` prompts, ``num_minibatches`` minibatches of one
    optimizer step each, ``new_tokens`` tokens per response and ``iterations`` PPO iterations."""
    if batch % num_minibatches:
        raise ValueError(f"--batch {batch} must be a multiple of --num-minibatches {num_minibatches}.")
    return {"per_device_train_batch_size": batch // num_minibatches, "gradient_accumulation_steps": num_minibatches,
            "num_mini_batches": num_minibatches, "local_rollout_forward_batch_size": batch,
            "total_episodes": batch * iterations, "num_ppo_epochs": 1, "response_length": new_tokens,
            "stop_token": None, "missing_eos_penalty": None, "temperature": 1.0, "kl_coef": 0.2,
            "num_sample_generations": 0, "report_to": "none", "save_strategy": "no", "logging_steps": 10**6,
            "disable_tqdm": True, "use_cpu": True, "bf16": False, "fp16": False, "learning_rate": 1e-5}


def steady_ratio(ours: list[float], theirs: list[float]) -> float:
    """Median over iterations (warm-up dropped: index 0) of our tokens/s over TRL's: seconds theirs / ours."""
    if len(ours) != len(theirs) or len(ours) < 2:
        raise ValueError("need the same number (>= 2) of iterations of both systems, the first being a warm-up.")
    return statistics.median(t / o for o, t in zip(ours[1:], theirs[1:]))


clock: Callable[[], float] = time.perf_counter  # set by main() from --clock


class PhaseClock:
    """Seconds per phase of TRL's loop, from wrapping its module-level helpers (no-grad ``forward`` is the
    reference, ``get_reward`` the value model and the reward model, ``batch_generation`` the generation)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, fn: Callable[..., Any], name: Callable[[], str]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                key = name()
                self.seconds[key] = self.seconds.get(key, 0.0) + clock() - t0
        return timed


def build_trl(args: Args, tok, lm, rm, phases: PhaseClock, callback: Any, out_dir: str):
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer, ppo_trainer

    ppo_trainer.batch_generation = phases.wrap(ppo_trainer.batch_generation, lambda: "generate")
    ppo_trainer.forward = phases.wrap(ppo_trainer.forward,
                                     lambda: "update forward" if torch.is_grad_enabled() else "reference")
    ppo_trainer.get_reward = phases.wrap(ppo_trainer.get_reward, lambda: "value + reward model")
    rng = np.random.default_rng(args.seed)
    prompts = rng.integers(3, len(tok), size=(args.batch * args.iterations, args.prompt_len)).tolist()
    data = Dataset.from_dict({"input_ids": prompts})
    rm = copy.deepcopy(rm)
    if rm.config.vocab_size < lm.config.vocab_size:  # TRL scores the policy's ids, not re-tokenized text
        rm.resize_token_embeddings(lm.config.vocab_size)
    value = GPT2ForSequenceClassification(copy.deepcopy(rm.config)).eval()  # the policy-sized critic
    value.config.num_labels = 1
    cfg = PPOConfig(output_dir=out_dir, seed=args.seed,
                    **trl_config_kwargs(args.batch, args.num_minibatches, args.new_tokens, args.iterations))
    return PPOTrainer(args=cfg, processing_class=tok, model=copy.deepcopy(lm), ref_model=copy.deepcopy(lm),
                      reward_model=rm, value_model=value, train_dataset=data, callbacks=[callback])


def main() -> None:
    import tyro
    from transformers import TrainerCallback

    global clock
    args = tyro.cli(Args)
    clock_name = args.clock if args.clock != "auto" else ("cpu" if args.threads == 1 else "wall")
    if clock_name not in CLOCKS:
        raise SystemExit(f"--clock must be one of auto, {', '.join(CLOCKS)}; got {args.clock!r}")
    clock = textgen_speed.clock = CLOCKS[clock_name]
    args.clock = clock_name
    torch.set_num_threads(args.threads)
    speed = SpeedArgs(threads=args.threads, batch=args.batch, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                      n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, vocab_size=args.vocab_size,
                      seed=args.seed, reward_model_shape=args.reward_model_shape, autocast_dtype=args.autocast_dtype)
    tok, lm, rm = setup(speed)
    trl_rm = copy.deepcopy(rm)  # as TRL gets it: this project's reward function fuses its GELU in place
    timers, passes = Timers(), {}
    ours_step = make_iteration(speed, tok, lm, rm, update=True, timers=timers, passes=passes)
    ours_s, theirs_s, trl_parts, our_parts = [], [], [], []
    phases = PhaseClock()
    mark = [clock()]

    class Interleave(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            theirs_s.append(clock() - mark[0])
            trl_parts.append(dict(phases.seconds))
            phases.seconds.clear()
            timers.reset()
            t0 = clock()
            ours_step()
            ours_s.append(clock() - t0)
            our_parts.append(dict(timers.seconds))
            mark[0] = clock()

    with tempfile.TemporaryDirectory() as out_dir:
        trainer = build_trl(args, tok, lm, trl_rm, phases, Interleave(), out_dir)
        mark[0] = clock()
        trainer.train()
    report(args, lm, rm, ours_s, theirs_s, trl_parts, our_parts, passes)


def report(args: Args, lm, rm, ours_s: list[float], theirs_s: list[float], trl_parts: list[dict[str, float]],
           our_parts: list[dict[str, float]], passes: dict[str, dict[str, int]]) -> None:
    import os

    tokens = args.batch * args.new_tokens
    params = sum(p.numel() for p in lm.parameters())
    rm_params = sum(p.numel() for p in rm.parameters())
    mean = lambda xs: sum(xs[1:]) / len(xs[1:])  # noqa: E731  (warm-up dropped)
    trl_tok, our_tok = tokens / mean(theirs_s), tokens / mean(ours_s)
    trl_roll = mean([sum(v for k, v in p.items() if k != "update forward") for p in trl_parts])
    our_roll = mean([p.get("rollout", 0.0) for p in our_parts])
    our_upd = mean([p.get("update", 0.0) for p in our_parts])
    seq = args.batch * (args.prompt_len + args.new_tokens)
    # FLOPs per iteration: TRL generate + ref + value + reward forwards, update fwd+bwd of policy and value model;
    # ours: policy decode + ref + reward forwards, update fwd+bwd of the shared trunk
    trl_gflop = forward_gflop(params, seq) * 3 + forward_gflop(rm_params, seq) + forward_gflop(2 * params, seq, True)
    our_gflop = forward_gflop(params, seq) * 2 + forward_gflop(rm_params, seq) + forward_gflop(params, seq, True)
    peak = matmul_peak_gflops(DTYPES.get(args.autocast_dtype or "float32", torch.float32), clock=clock)
    print(f"workload: GPT-2 {args.n_layer}x{args.n_head}x{args.n_embd} ({params / 1e6:.1f}M), reward model "
          f"{parse_shape(args.reward_model_shape, (args.n_layer, args.n_head, args.n_embd))}, batch {args.batch}, "
          f"prompt {args.prompt_len}, {args.new_tokens} new tokens, 1 epoch x {args.num_minibatches} minibatches, "
          f"{args.threads} threads, {args.clock} clock, {len(ours_s) - 1} timed iterations each (interleaved), "
          f"this project autocast "
          f"{args.autocast_dtype}, load average {os.getloadavg()[0]:.2f}")
    print(f"TRL 1.12 PPOTrainer  {trl_tok:7.0f} tokens/s  per batch: rollout {trl_roll:.2f} s / update "
          f"{mean(theirs_s) - trl_roll:.2f} s  ({gflops(trl_gflop, mean(theirs_s)):.0f} GFLOP/s)")
    print("      " + ", ".join(f"{k} {mean([p.get(k, 0.0) for p in trl_parts]):.2f} s" for k in sorted(trl_parts[-1])))
    print(f"this project         {our_tok:7.0f} tokens/s  per batch: rollout {our_roll:.2f} s / update "
          f"{our_upd:.2f} s  ({gflops(our_gflop, mean(ours_s)):.0f} GFLOP/s)")
    print("      " + ", ".join(f"{k} {mean([p.get(k, 0.0) for p in our_parts]):.2f} s" for k in sorted(our_parts[-1])
                             if k not in ("rollout", "update")))
    print(f"ratio (this project / TRL, median of per-iteration ratios) {steady_ratio(ours_s, theirs_s):.2f}x; "
          f"torch.mm 2048² peak here {peak:.0f} GFLOP/s")
    print(f"forward passes per rollout (this project): {format_passes(passes)}; TRL: 1 generate() "
          f"({args.new_tokens} decode steps), 1 teacher-forced pass each of reference, value model and reward model")


if __name__ == "__main__":
    main()
