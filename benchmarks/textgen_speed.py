"""Benchmark TextGen-IMDB-v0 + the agent against ``model.generate()``, in one process.

    python benchmarks/textgen_speed.py --threads 2                                   # tiny: 2x4x128
    python benchmarks/textgen_speed.py --threads 2 --n-layer 6 --n-head 8 --n-embd 512   # 23M
    python benchmarks/textgen_speed.py --threads 2 --n-layer 12 --n-head 12 --n-embd 768 \\
        --vocab-size 50257 --batch 32                                               # GPT-2 small, 124M
    python benchmarks/textgen_speed.py --threads 2 --n-layer 6 --n-head 8 --n-embd 512 --reward-model-shape same

Workload: a randomly initialised GPT-2 of the given shape (no download; a byte-level BPE tokenizer with 8192
tokens trained on IMDB in seconds; ``--vocab-size`` widens the model's vocabulary beyond the tokenizer, e.g. to
GPT-2's 50257, and ids the tokenizer does not know decode to nothing), ``--batch`` rows, prompts of exactly
``--prompt-len`` tokens, ``--new-tokens`` new tokens, multinomial sampling at temperature 1. The reward model
is a GPT-2 sequence classifier (the format ``runners.train_reward`` saves) of shape ``--rm-*``, or
``--reward-model-shape LxHxD`` / ``same`` (the policy's shape, as in TRL's PPO example). ``--ref-mode`` picks the
env's reference mode (``one_pass``, what ``runners.train`` uses, or ``per_step``).

Besides the times it prints, per rollout, the forward passes of each model (policy and reference decoding steps
and prefills, the reference's teacher-forced passes, the reward model's batched calls) and the achieved GFLOP/s
of each phase (``2·params·tokens`` per forward, ``6·`` for the update) next to the measured ``torch.mm`` peak.

(a) ``model.generate()`` on one batch: the baseline, one KV-cached policy decode.
(b) ``RolloutCollector.collect()`` through the natively vectorized env: policy decode (KV cache, sampling,
    value head), reference log-probs (KV-cached frozen copy), reward-model scoring of finished rows. Reported as
    time per response token relative to (a), with a breakdown of where the time goes.
(c) A PPO iteration: (b) + one update (1 epoch, 4 minibatches), as response tokens/s and as a fraction of
    (a)'s tokens/s; peak RSS of the process (``resource.getrusage``).

All three run in one process on the same models, interleaved batch by batch (a, b, c, a, b, c, ...) after one
warm-up batch each, so the ratios cancel most of the noise of a shared machine.
"""

from __future__ import annotations

import copy
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

import envs  # noqa: F401
from agents.agent import Agent, AgentConfig
from agents.networks import CausalLMPolicy
from agents.rollout import RolloutCollector
from envs.imdb import load_imdb
from envs.lm.kv_cache import AUTOCAST_DTYPES
from envs.rewards import make_reward_fn
from runners.common.tiny_lm import tiny_gpt2_config, train_tokenizer

# isort: off
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling helpers (benchmarks/ is not a package)
from perf import DTYPES, diff_counts, format_passes, forward_gflop, gflops, matmul_peak_gflops, parse_shape  # noqa: E402
# isort: on


@dataclass
class Args:
    threads: int = 2
    """torch intra-op threads."""
    batch: int = 64
    prompt_len: int = 8
    new_tokens: int = 16
    repeats: int = 3
    """Timed batches per phase (after one warm-up batch)."""
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    vocab_size: int | None = None
    """Model vocabulary (default: the tokenizer's 8192)."""
    rm_n_layer: int = 2
    rm_n_head: int = 4
    rm_n_embd: int = 128
    reward_model_shape: str | None = None
    """"same" (the policy's shape) or LAYERSxHEADSxWIDTH, e.g. 6x8x512; overrides --rm-*."""
    ref_mode: str = "one_pass"
    """The env's reference mode: "one_pass" (one teacher-forced pass per finished response) or "per_step"."""
    kl_coef: float = 0.2
    seed: int = 0
    autocast_dtype: str | None = None
    """None (float32) or "bfloat16"/"float16": policy, reference and generate() under torch.autocast."""
    clock: str = "auto"
    """"wall", "cpu" (process CPU time: immune to waiting for a core on a loaded machine, meaningful with
    --threads 1) or "auto" (cpu with --threads 1, else wall)."""


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock: Callable[[], float] = time.perf_counter  # set by main() from --clock


class Timers:
    """Accumulated seconds (of :data:`clock`) per name; :meth:`wrap` times every call of a callable. A call
    inside a call timed under the same name (the reference's head inside its one-pass scoring) counts once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._running: set[str] = set()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if name in self._running:
                return fn(*args, **kwargs)
            self._running.add(name)
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += clock() - t0
                self._running.discard(name)

        return timed

    def reset(self) -> None:
        self.seconds.clear()


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB (Linux)."""
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * resource.getpagesize() / 2**20
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup(args: Args):
    rows = load_imdb("train", limit=2000, seed=0)
    tok = train_tokenizer((r["text"] for r in rows), vocab_size=8192)
    cfg = tiny_gpt2_config(tok, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    cfg.vocab_size = args.vocab_size or len(tok)
    torch.manual_seed(args.seed)
    lm = GPT2LMHeadModel(cfg).eval()
    if args.reward_model_shape is not None:
        args.rm_n_layer, args.rm_n_head, args.rm_n_embd = parse_shape(
            args.reward_model_shape, (args.n_layer, args.n_head, args.n_embd))
    rm_cfg = tiny_gpt2_config(tok, n_layer=args.rm_n_layer, n_head=args.rm_n_head, n_embd=args.rm_n_embd)
    rm_cfg.num_labels = 1
    rm = GPT2ForSequenceClassification(rm_cfg).eval()
    return tok, lm, rm


def make_generate(args: Args, tok, lm, prompts: np.ndarray) -> Callable[[], int]:
    """One ``model.generate()`` batch (sampling, exactly ``new_tokens`` new tokens) -> response tokens."""
    ids = torch.as_tensor(prompts)
    kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
              pad_token_id=tok.pad_token_id, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)

    dtype = AUTOCAST_DTYPES.get(args.autocast_dtype or "")

    def generate() -> int:
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = lm.generate(**kw)
        assert out.shape[1] == args.prompt_len + args.new_tokens
        return args.batch * args.new_tokens

    return generate


def make_collector(args: Args, tok, lm, rm, cfg: AgentConfig, timers: Timers) -> tuple[Agent, RolloutCollector]:
    venv = gym.make_vec(
        "TextGen-IMDB-v0", num_envs=args.batch, vectorization_mode="vector_entry_point", model=lm, tokenizer=tok,
        reward_model=make_reward_fn(rm, device="cpu", tokenizer=tok), prompt_min_len=args.prompt_len,
        prompt_max_len=args.prompt_len, max_new_tokens=args.new_tokens, kl_coef=args.kl_coef, device="cpu",
        autocast_dtype=args.autocast_dtype, ref_mode=args.ref_mode,
    )
    agent = Agent(CausalLMPolicy(copy.deepcopy(lm)), cfg)
    agent.net.autocast_dtype = AUTOCAST_DTYPES.get(args.autocast_dtype or "")
    agent.net.eval()
    collector = RolloutCollector(venv, agent, num_steps=args.new_tokens + 1, seed=args.seed)
    core = venv.unwrapped.core  # instrument the parts of a rollout (instance attributes only)
    agent.policy_step = timers.wrap("policy decode", agent.policy_step)
    core.ref_lm.step = timers.wrap("reference", core.ref_lm.step)
    core.ref_lm.head = timers.wrap("reference", core.ref_lm.head)
    core.response_ref_logprobs = timers.wrap("reference", core.response_ref_logprobs)  # the one-pass mode
    core.reward_fn = timers.wrap("reward model", core.reward_fn)
    return agent, collector


def policy_passes(agent: Agent) -> dict[str, int]:
    """The policy decoder's forward passes so far (it outlives a rollout; none before the first)."""
    decoder = agent.net._decoder
    return dict(decoder.passes) if decoder is not None else {"decode": 0, "prefill": 0}


def rollout_passes(agent: Agent, core: Any, before: dict[str, int], policy_before: dict[str, int]
                   ) -> dict[str, dict[str, int]]:
    """Forward passes of each model in the rollout that just ended."""
    env = diff_counts(core.pass_counts(), before)
    policy = diff_counts(policy_passes(agent), policy_before)
    return {"policy": policy,
            "reference": {"decode": env["reference_decode"], "prefill": env["reference_prefill"],
                          "teacher-forced": env["reference_teacher_forced"]},
            "reward model": {"teacher-forced": env["reward"]}}


def make_iteration(
    args: Args, tok, lm, rm, update: bool, timers: Timers, passes: dict[str, dict[str, int]] | None = None,
) -> Callable[[], int]:
    """One rollout (+ one PPO update when ``update``) -> response tokens; parts timed into ``timers``, the last
    rollout's forward passes per model into ``passes``."""
    cfg = AgentConfig(algo="ppo", update_epochs=1, num_minibatches=4, gamma=1.0, learning_rate=1e-5, anneal_lr=False)
    agent, collector = make_collector(args, tok, lm, rm, cfg, timers)
    core = collector.envs.unwrapped.core

    def iteration() -> int:
        t0 = clock()
        before, policy_before = core.pass_counts(), policy_passes(agent)
        ro, _ = collector.collect()
        timers.seconds["rollout"] += clock() - t0
        if passes is not None:
            passes.update(rollout_passes(agent, core, before, policy_before))
        if update:
            t0 = clock()
            agent.update(ro)
            timers.seconds["update"] += clock() - t0
        return int(ro.valid.sum())

    return iteration


def measure(
    phases: dict[str, Callable[[], int]], timers: dict[str, Timers], repeats: int, peaks: dict[str, float] | None = None
) -> dict[str, tuple[float, int]]:
    """Warm every phase up once, then run them interleaved ``repeats`` times, rotating their order (so that load
    changes on a shared machine hit every phase alike) -> total (seconds, response tokens) per phase.
    ``peaks`` receives the process's peak RSS (MB) after each phase's warm-up, in phase order."""
    sample = Agent.sample
    try:
        for name, phase in phases.items():
            Agent.sample = staticmethod(timers[name].wrap("policy decode", sample))
            phase()  # warm-up (the first rollout also aligns every row on an episode start)
            timers[name].reset()
            if peaks is not None:
                peaks[name] = rss_mb()[1]
        totals = {name: [0.0, 0] for name in phases}
        names = list(phases)
        for r in range(repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                Agent.sample = staticmethod(timers[name].wrap("policy decode", sample))
                t0 = clock()
                totals[name][1] += phases[name]()
                totals[name][0] += clock() - t0
        return {name: (sec, tok) for name, (sec, tok) in totals.items()}
    finally:
        Agent.sample = sample


def print_flops(args: Args, lm, rm, parts: dict[str, float], ppo_parts: dict[str, float], gen_s: float,
                passes: dict[str, dict[str, int]]) -> None:
    """Achieved GFLOP/s per phase next to the machine's ``torch.mm`` peak, and the forward passes per rollout."""
    dtype = args.autocast_dtype or "float32"
    peak = matmul_peak_gflops(DTYPES.get(dtype, torch.float32), clock=clock)
    params = sum(p.numel() for p in lm.parameters())
    rm_params = sum(p.numel() for p in rm.parameters())
    tokens = args.batch * (args.prompt_len + args.new_tokens)  # every position of every row, once
    rows = [("generate", forward_gflop(params, tokens), gen_s),
            ("policy decode", forward_gflop(params, tokens), parts.get("policy decode", 0.0)),
            ("reference", forward_gflop(params, tokens), parts.get("reference", 0.0)),
            ("reward model", forward_gflop(rm_params, tokens), parts.get("reward model", 0.0)),
            ("update", forward_gflop(params, tokens, backward=True), ppo_parts.get("update", 0.0))]
    print(f"GFLOP/s (2·params·tokens per forward, 6· for the update; torch.mm 2048² {dtype} peak here {peak:.0f}):")
    print("      " + ", ".join(f"{name} {gflops(g, sec):.0f}" for name, g, sec in rows))
    print(f"forward passes per rollout: {format_passes(passes)}")


def main() -> None:
    import os

    import tyro

    global clock
    args = tyro.cli(Args)
    clock_name = args.clock if args.clock != "auto" else ("cpu" if args.threads == 1 else "wall")
    if clock_name not in CLOCKS:
        raise SystemExit(f"--clock must be one of auto, {', '.join(CLOCKS)}; got {args.clock!r}")
    clock = CLOCKS[clock_name]
    torch.set_num_threads(args.threads)
    tok, lm, rm = setup(args)
    n_params = sum(p.numel() for p in lm.parameters())
    rng = np.random.default_rng(args.seed)
    prompts = rng.integers(0, len(tok), size=(args.batch, args.prompt_len))
    rss_setup, _ = rss_mb()
    timers = {"generate": Timers(), "rollout": Timers(), "ppo": Timers()}
    passes: dict[str, dict[str, int]] = {}
    phases = {
        "generate": make_generate(args, tok, lm, prompts),
        "rollout": make_iteration(args, tok, lm, rm, update=False, timers=timers["rollout"], passes=passes),
        "ppo": make_iteration(args, tok, lm, rm, update=True, timers=timers["ppo"]),
    }
    _, rss_built = rss_mb()
    peaks: dict[str, float] = {}
    results = measure(phases, timers, args.repeats, peaks)
    _, rss_peak = rss_mb()
    gen_s, roll_s, ppo_s = (results[k][0] / args.repeats for k in ("generate", "rollout", "ppo"))
    per_tok_gen, per_tok_roll, per_tok_ppo = (results[k][0] / results[k][1] for k in ("generate", "rollout", "ppo"))
    gen_tok_s, ppo_tok_s = 1 / per_tok_gen, 1 / per_tok_ppo
    parts = {k: v / args.repeats for k, v in timers["rollout"].seconds.items()}
    ppo_parts = {k: v / args.repeats for k, v in timers["ppo"].seconds.items()}
    load = os.getloadavg()[0]
    print(f"workload: GPT-2 {args.n_layer}x{args.n_head}x{args.n_embd} vocab {lm.config.vocab_size} "
          f"({n_params / 1e6:.1f}M params), reward model {args.rm_n_layer}x{args.rm_n_head}x{args.rm_n_embd}, "
          f"batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new tokens, {args.threads} threads, "
          f"{args.repeats} batches per phase, {clock_name} clock, autocast {args.autocast_dtype}, "
          f"load average {load:.2f}")
    print(f"(a) model.generate()               {gen_s:8.3f} s/batch {gen_tok_s:9.0f} response tokens/s")
    print(f"(b) rollout (env + agent, KV cache) {roll_s:8.3f} s/batch {1 / per_tok_roll:9.0f} "
          f"response tokens/s   rollout/generate time per token {per_tok_roll / per_tok_gen:.2f}x")
    for name in ("policy decode", "reference", "reward model"):
        print(f"      {name:<15} {parts.get(name, 0.0):8.3f} s/batch ({parts.get(name, 0.0) / roll_s:5.1%} of the "
              f"rollout, {parts.get(name, 0.0) / gen_s:.2f}x generate)")
    rest = roll_s - sum(parts.get(k, 0.0) for k in ("policy decode", "reference", "reward model"))
    print(f"      {'env + collector':<15} {rest:8.3f} s/batch ({rest / roll_s:5.1%} of the rollout)")
    print(f"(c) PPO iteration (1 epoch, 4 mb)  {ppo_s:8.3f} s/batch {ppo_tok_s:9.0f} "
          f"response tokens/s   fraction of generate tokens/s {ppo_tok_s / gen_tok_s:.2f}")
    print(f"      rollout         {ppo_parts['rollout']:8.3f} s/batch ({ppo_parts['rollout'] / gen_s:.2f}x generate)")
    print(f"      update          {ppo_parts['update']:8.3f} s/batch ({ppo_parts['update'] / gen_s:.2f}x generate)")
    print_flops(args, lm, rm, parts, ppo_parts, gen_s, passes)
    print(f"memory: RSS after building the models {rss_setup:.0f} MB, peak RSS of the process (all phases, the PPO "
          f"update being the largest) {rss_peak:.0f} MB")
    steps = ", ".join(f"+{peaks[k] - prev:.0f} MB after the first {k}" for prev, k in
                      zip([rss_built, *list(peaks.values())[:-1]], peaks))
    print(f"        peak RSS with every phase's models built {rss_built:.0f} MB; then {steps} (each: how much "
          f"that phase's warm-up raised the peak; the PPO line: Adam state, gradients, update activations)")


if __name__ == "__main__":
    main()
