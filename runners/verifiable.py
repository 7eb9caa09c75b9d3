"""A verifiable-reward task learned on CPU: reasoning-gym's ``basic_arithmetic``, SFT then GRPO on ``TextGen-v0``.

    python -m runners.verifiable --preset tiny            # -> runs/verifiable/metrics.json (~11 min on 1 core)

1. Problems from a real task library (``reasoning_gym.create_dataset("basic_arithmetic", ...)``, offline):
   questions such as "Calculate 5 - 3." with an exact scorer (``score_answer``). Training and held-out problems
   come from two seeds.
2. SFT with the project's SFT stage (:func:`runners.sft.run_sft`, a tiny GPT-2 and its tokenizer trained from
   scratch) on solved training problems, ``"<question> Answer: <answer>"`` + EOS; deliberately short, so that the
   model answers some problems and RL has something to improve.
3. GRPO (or RLOO) with :func:`runners.train.train` on ``TextGen-v0``: prompts ``"<question> Answer:"``, reward
   1 where ``score_answer(completion, entry)`` finds the exact answer, else 0 (:func:`exact_match`), the SFT
   model as the frozen reference (KL).
4. Held-out accuracy (sampled at temperature 1, and greedy) before and after RL, with standard errors, and the
   gains with their paired standard errors (docs/prompts_and_rewards.md has the measured figures).

Needs the optional ``reasoning-gym`` package: ``pip install 'rlhf-gym[reasoning]'``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from runners.common.cli import cli_with_presets, quiet_transformers
from runners.common.run_loop import train
from runners.common.run_spec import TrainConfig, preset
from runners.sft import run_sft, tiny_config

SUFFIX = " Answer:"
MODES = (("greedy", True), ("sampled", False))
"""the held-out accuracies measured: greedy decoding, and one sample at temperature 1 (what GRPO maximises)"""


@dataclass(frozen=True)
class VerifiableConfig:
    """SFT on solved arithmetic problems, then GRPO/RLOO with the exact-match reward."""

    preset: Literal["none", "tiny"] = "none"
    out_dir: str = "runs/verifiable"
    train_problems: int = 2000
    eval_problems: int = 2000
    operators: tuple[str, ...] = ("+", "-")
    """reasoning-gym operators (two one-digit terms, no parentheses or negation)"""
    seed: int = 0
    sft_steps: int = 400
    sft_lr: float = 5e-3
    algo: Literal["grpo", "rloo"] = "grpo"
    updates: int = 150
    num_envs: int = 64
    group_size: int = 4
    learning_rate: float = 1e-4
    kl_coef: float = 0.02
    max_new_tokens: int = 3
    threads: int = 1


PRESETS = {"tiny": VerifiableConfig(preset="tiny")}


def problems(size: int, seed: int, operators: tuple[str, ...] = ("+", "-")) -> list[dict[str, Any]]:
    """reasoning-gym ``basic_arithmetic`` problems (2 one-digit terms) as ``TextGen-v0`` rows."""
    try:
        import reasoning_gym
    except ImportError:
        raise ImportError("this recipe needs reasoning-gym: pip install 'rlhf-gym[reasoning]'") from None
    data = reasoning_gym.create_dataset("basic_arithmetic", size=size, seed=seed, min_terms=2, max_terms=2,
                                        min_digits=1, max_digits=1, operators=tuple(operators),
                                        allow_parentheses=False, allow_negation=False)
    return [{"prompt": e["question"] + SUFFIX, "answer": e["answer"], "metadata": e["metadata"]} for e in data]


def exact_match(prompts: list[str], completions: list[str], answer: list[str], metadata: list[dict]) -> list[float]:
    """1.0 where reasoning-gym's scorer finds the exact answer, else 0.0.

    ``score_answer`` also gives partial credit ``len(answer) / len(completion)`` to any completion that contains
    the answer, so "15" and "-5" earn 0.5 for the answer "5": a reward for wrong answers, which GRPO learns.
    """
    import reasoning_gym

    score = reasoning_gym.get_score_answer_fn("basic_arithmetic")
    return [float(score(c.strip(), {"answer": a, "metadata": m}) == 1.0)
            for c, a, m in zip(completions, answer, metadata)]


@torch.no_grad()
def correct(model: PreTrainedModel, tok: PreTrainedTokenizerBase, rows: list[dict[str, Any]], greedy: bool,
            max_new_tokens: int, seed: int = 0) -> list[bool]:
    """Whether ``model`` answers each of ``rows`` exactly (greedy, or one sample at temperature 1)."""
    model.eval()
    torch.manual_seed(seed)
    hits: list[bool] = []
    for start in range(0, len(rows), 128):
        batch = rows[start:start + 128]
        enc = tok([r["prompt"] for r in batch], return_tensors="pt", padding=True, padding_side="left")
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=not greedy, temperature=1.0,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        scores = exact_match([r["prompt"] for r in batch], texts, [r["answer"] for r in batch],
                             [r["metadata"] for r in batch])
        hits += [s == 1.0 for s in scores]
    return hits


def accuracy(hits: list[bool]) -> tuple[float, float]:
    """The exact-answer rate and its standard error ``sqrt(p(1-p)/n)``."""
    p = sum(hits) / len(hits)
    return p, math.sqrt(p * (1 - p) / len(hits))


def gain(before: list[bool], after: list[bool]) -> tuple[float, float]:
    """The accuracy gain on the same rows and its paired standard error ``std(after_i - before_i) / sqrt(n)``."""
    d = [float(b) - float(a) for a, b in zip(before, after, strict=True)]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / max(len(d) - 1, 1)
    return mean, math.sqrt(var / len(d))


def _sft(cfg: VerifiableConfig, rows: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """The SFT stage on ``"<prompt> <answer>"`` texts (each followed by EOS), from scratch."""
    data = out / "sft_data.jsonl"
    data.write_text("".join(json.dumps({"text": f"{r['prompt']} {r['answer']}"}) + "\n" for r in rows))
    sft = tiny_config(data=str(data), output_dir=str(out / "sft"), max_train_reviews=None, eval_reviews=100,
                      block_size=64, batch_size=16, learning_rate=cfg.sft_lr, warmup_steps=20,
                      max_steps=cfg.sft_steps, eval_every=cfg.sft_steps, vocab_size=400, tokenizer_reviews=len(rows),
                      n_layer=2, n_head=4, n_embd=128, num_samples=0, seed=cfg.seed, num_threads=cfg.threads,
                      log_dir=str(out / "tb"), device="cpu")
    return run_sft(sft)


def _rl_config(cfg: VerifiableConfig, out: Path) -> TrainConfig:
    base = preset("TextGen-v0", cfg.algo)
    steps = cfg.max_new_tokens + 1  # an episode and its reset step
    agent = dataclasses.replace(base.agent, learning_rate=cfg.learning_rate, num_minibatches=2)
    return dataclasses.replace(
        base, seed=cfg.seed, num_envs=cfg.num_envs, num_steps=steps, total_timesteps=cfg.updates * cfg.num_envs * steps,
        group_size=cfg.group_size, max_new_tokens=cfg.max_new_tokens, kl_coef=cfg.kl_coef, adaptive_kl=False,
        model=str(out / "sft"), agent=agent, log_dir=str(out), run_name="rl", threads=cfg.threads, progress=False,
        checkpoint_every=10_000, device="cpu")


def run(cfg: VerifiableConfig) -> dict[str, Any]:
    """SFT, held-out accuracy, RL, held-out accuracy again; the figures, also in ``out_dir/metrics.json``."""
    quiet_transformers()
    torch.set_num_threads(cfg.threads)
    t0, out = time.time(), Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_rows = problems(cfg.train_problems, cfg.seed, cfg.operators)
    held_out = problems(cfg.eval_problems, cfg.seed + 1000, cfg.operators)
    _sft(cfg, train_rows, out)
    tok = AutoTokenizer.from_pretrained(out / "sft")
    before = AutoModelForCausalLM.from_pretrained(out / "sft")
    figures: dict[str, Any] = {"sft_minutes": (time.time() - t0) / 60}
    hits = {name: correct(before, tok, held_out, greedy, cfg.max_new_tokens, cfg.seed) for name, greedy in MODES}
    t1 = time.time()
    result = train(_rl_config(cfg, out), env_overrides={"dataset": train_rows, "reward_model": exact_match})
    after = result["agent"].net.lm
    for name, greedy in MODES:
        hits_after = correct(after, tok, held_out, greedy, cfg.max_new_tokens, cfg.seed)
        figures |= {f"before_{name}": accuracy(hits[name]), f"after_{name}": accuracy(hits_after),
                    f"gain_{name}": gain(hits[name], hits_after)}
    figures |= {"rl_minutes": (time.time() - t1) / 60, "minutes": (time.time() - t0) / 60,
                "kl": result.get("recent_kl"), "rl_env_steps": result["global_step"],
                "held_out": cfg.eval_problems, "config": dataclasses.asdict(cfg)}
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(figures, indent=2))
    os.replace(tmp, out / "metrics.json")  # never half written
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point: ``python -m runners.verifiable --help``."""
    cfg = cli_with_presets(VerifiableConfig, PRESETS, argv, description=__doc__, module="runners.verifiable")
    f = run(cfg)
    for name in ("greedy", "sampled"):
        (b, sb), (a, sa), (d, sd) = f[f"before_{name}"], f[f"after_{name}"], f[f"gain_{name}"]
        print(f"held-out accuracy ({name}): {b:.3f} ± {sb:.3f} after SFT -> {a:.3f} ± {sa:.3f} after {cfg.algo}"
              f" (gain {d:+.3f} ± {sd:.3f}, {d / max(sd, 1e-12):.1f} standard errors)")
    print(f"KL {f['kl']:.3f}, {f['rl_env_steps']} RL env steps, {f['minutes']:.1f} min -> {cfg.out_dir}")
    return f


if __name__ == "__main__":
    main()
