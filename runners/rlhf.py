"""The whole RLHF pipeline offline: SFT → reward model → PPO on TextGen-IMDB-v0, with a report.

    python -m runners.rlhf --preset tiny          # ~20 minutes on 2 idle CPU cores
    python -m runners.rlhf --preset ci            # the scaled-down version CI runs (a minute or two)

Every stage runs a fixed number of steps (SFT and reward-model optimizer steps, PPO updates), so the
same command and seed give the same models and report (bit-identical on CPU for the same torch
version and thread count). The optional ``--*-max-minutes`` caps only stop a stage early; the report
then says so in bold.

1. ``runners.sft``: a tiny GPT-2 and its BPE tokenizer trained from scratch on IMDB reviews.
2. ``runners.train_reward``: a reward model initialised from the SFT trunk, trained on IMDB
   preference pairs (positive review chosen over negative) with ``-log σ(r_chosen - r_rejected)``.
3. ``runners.train``: PPO on TextGen-IMDB-v0 with the SFT model as policy *and* frozen
   reference, the reward model as the score, adaptive KL control (β0 0.1, target 6 nats, horizon 200
   episodes, so β can follow the KL within the 80 updates), and length controls: EOS is
   masked out of the allowed actions for the first ``--min-new-tokens`` tokens (12 of 16 in the
   tiny preset), so the policy cannot raise a length-blind score by ending early.

Under ``torchrun --nproc-per-node N -m runners.rlhf ...`` rank 0 runs the SFT and reward-model
stages and the held-out evaluations while the other ranks wait; the PPO stage is data-parallel
(``--num-envs`` per rank, see :mod:`runners.common.distributed`).

The trained policy is exported to ``<output_dir>/policy/`` (a plain transformers model; value head
beside it). The report (``<output_dir>/report.md`` + ``report.json``) gives, for the same held-out
prompts (IMDB test split) before and after PPO, the mean score ± standard error with a 95% interval,
the KL to the reference, response length in tokens and characters, EOS rate and distinct-1/2
(:mod:`runners.common.text_eval`); the paired score gain in standard errors, the length ratio, the reward
model's accuracy on 1000 IMDB test pairs, the final KL against its target, timings, paired samples
and where the TensorBoard runs are.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch
from transformers import AutoTokenizer

from agents.agent import Agent, AgentConfig
from agents.networks import CausalLMPolicy
from agents.validate import check_fields
from envs.lm import load_causal_lm
from runners import sft, train_reward
from runners.common import cli, distributed
from runners.common.cli import quiet_transformers
from runners.common.export import export_policy
from runners.common.text_eval import evaluate_text, metrics_row, paired_gain, table_head
from runners.train import TrainConfig, train
from runners.train import preset as train_preset


@dataclass(frozen=True)
class RLHFConfig:
    """The whole RLHF pipeline offline: SFT, reward model, PPO, and a before/after report."""

    preset: Literal["tiny", "ci"] = "tiny"
    output_dir: str | None = None
    """default: artifacts/rlhf-<preset>"""
    log_dir: str = "runs"
    sft_steps: int = 800
    sft_max_train_reviews: int | None = 12_000
    sft_size: tuple[int, int] | None = None
    """(n_layer, n_embd) of the SFT GPT-2 (default: the SFT tiny preset's)"""
    rm_steps: int = 500
    rm_max_length: int | None = None
    rm_train_pairs: int = 20_000
    ppo_updates: int = 80
    sft_max_minutes: float | None = None
    """optional wall-clock caps: a capped stage stops early and the report says so"""
    rm_max_minutes: float | None = None
    ppo_max_minutes: float | None = None
    num_envs: int = 64
    max_new_tokens: int = 16
    """response length cap (the upper end when max_new_tokens_range is set)"""
    max_new_tokens_range: tuple[int, int] | None = None
    """(lo, hi): each episode draws its cap from lo..hi (TRL's LengthSampler); overrides max_new_tokens"""
    min_new_tokens: int = 12
    """EOS is masked out of the policy's allowed actions before this many tokens: PPO cannot win by
    ending early (the reward hacking a length-blind reward model invites)"""
    missing_eos_penalty: float | None = None
    learning_rate: float = 1e-4
    kl_coef: float = 0.1
    kl_target: float = 6.0
    kl_horizon: float = 200.0
    eval_prompts: int = 256
    seed: int = 0
    threads: int = 2
    reuse: bool = True
    """skip a stage whose output directory already holds a model"""
    dist_timeout: float = 7200.0
    """torchrun runs: seconds the other ranks wait for rank 0's SFT and reward-model stages"""

    def __post_init__(self) -> None:
        check_fields(self, {
            "sft_steps": "int>=1", "sft_max_train_reviews": "int>=1?", "rm_steps": "int>=1", "rm_max_length": "int>=1?",
            "rm_train_pairs": "int>=1", "ppo_updates": "int>=1", "sft_max_minutes": ">0?", "rm_max_minutes": ">0?",
            "ppo_max_minutes": ">0?", "num_envs": "int>=1", "max_new_tokens": "int>=1", "learning_rate": ">0",
            "kl_coef": ">=0", "kl_target": ">0", "kl_horizon": ">0", "eval_prompts": "int>=1", "seed": "int>=0",
            "threads": "int>=1",
        }, extra={f"sft_size must be None or (n_layer >= 1, n_embd >= 1), got {self.sft_size}":
                  lambda: self.sft_size is None or (len(self.sft_size) == 2 and min(self.sft_size) >= 1)})


PRESETS = {
    "tiny": RLHFConfig(),
    "ci": RLHFConfig(preset="ci", sft_steps=300, sft_max_train_reviews=3000, sft_size=(2, 128), rm_steps=250,
                     rm_train_pairs=6000, rm_max_length=48, ppo_updates=24, num_envs=32,
                     max_new_tokens=10, min_new_tokens=7, learning_rate=3e-4, eval_prompts=128, reuse=False),
}


def _has_model(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def run_stages(cfg: RLHFConfig) -> dict[str, Any]:
    """All stages; under torchrun only rank 0 returns the full report (the others: the PPO result)."""
    quiet_transformers()  # our progress bars show the run, not transformers' loading bars
    main_rank = distributed.init_distributed("auto", cfg.dist_timeout).rank == 0
    out = Path(cfg.output_dir or f"artifacts/rlhf-{cfg.preset}")
    torch.set_num_threads(cfg.threads)
    timings: dict[str, float] = {}
    metrics: dict[str, Any] = {}
    sft_dir, rm_dir = out / "sft", out / "rm"
    with distributed.agree_on_errors("the SFT and reward-model stages"):  # the other ranks wait here
        if main_rank:
            out.mkdir(parents=True, exist_ok=True)
            _supervised_stages(cfg, sft_dir, rm_dir, timings, metrics)
    if not main_rank:  # data-parallel PPO only; rank 0 evaluates and reports
        return {"ppo": _ppo_stage(cfg, sft_dir, rm_dir)}
    t0 = time.time()
    sft_policy = Agent(CausalLMPolicy(load_causal_lm(str(sft_dir))[0]).eval(), AgentConfig())
    before = held_out(cfg, sft_dir, rm_dir, sft_policy)
    timings["eval_seconds"] = time.time() - t0
    t0 = time.time()
    result = _ppo_stage(cfg, sft_dir, rm_dir)
    timings["ppo_seconds"] = time.time() - t0
    agent: Agent = result.pop("agent")
    t0 = time.time()
    after = held_out(cfg, sft_dir, rm_dir, agent)
    timings["eval_seconds"] += time.time() - t0
    tokenizer = AutoTokenizer.from_pretrained(str(sft_dir))
    policy_dir = export_policy(agent.net, tokenizer, out, _longest(cfg), cfg.min_new_tokens)  # out/policy
    checks = {**paired_gain(before, after),
              "length_ratio_tokens": after["tokens_mean"] / before["tokens_mean"],
              "length_ratio_chars": after["chars_mean"] / before["chars_mean"],
              "rm_accuracy": metrics.get("reward_model", {}).get("eval_accuracy"),
              "final_kl": result.get("recent_kl"), "kl_target": cfg.kl_target}
    return {"config": dataclasses.asdict(cfg), "output_dir": str(out), "timings": timings, "stages": metrics,
            "ppo": result, "before": before, "after": after, "checks": checks, "policy_dir": str(policy_dir),
            "tensorboard": [str(Path(cfg.log_dir)), result["run_dir"]]}


def _supervised_stages(cfg: RLHFConfig, sft_dir: Path, rm_dir: Path, timings: dict, metrics: dict) -> None:
    t0 = time.time()
    if not (cfg.reuse and _has_model(sft_dir)):
        size = {"n_layer": cfg.sft_size[0], "n_embd": cfg.sft_size[1]} if cfg.sft_size else {}
        sft_cfg = sft.tiny_config(output_dir=str(sft_dir), log_dir=cfg.log_dir, max_steps=cfg.sft_steps,
                                  max_minutes=cfg.sft_max_minutes,
                                  max_train_reviews=cfg.sft_max_train_reviews, seed=cfg.seed, num_threads=cfg.threads,
                                  **size)
        metrics["sft"] = sft.run_sft(sft_cfg)
    timings["sft_seconds"] = time.time() - t0

    t0 = time.time()
    if not (cfg.reuse and _has_model(rm_dir)):
        rm_cfg = train_reward.tiny_config(init=str(sft_dir), output_dir=str(rm_dir), log_dir=cfg.log_dir,
                                          max_minutes=cfg.rm_max_minutes, max_steps=cfg.rm_steps,
                                          eval_every=max(100, cfg.rm_steps // 2),  # 1000-pair evals cost ~15 s each
                                          n_train_pairs=cfg.rm_train_pairs, seed=cfg.seed, num_threads=cfg.threads,
                                          **({"max_length": cfg.rm_max_length} if cfg.rm_max_length else {}))
        metrics["reward_model"] = train_reward.run_reward_training(rm_cfg)
    timings["rm_seconds"] = time.time() - t0



def _length_kwargs(cfg: RLHFConfig) -> dict[str, Any]:
    """The env's length controls: max_new_tokens (int or range), min_new_tokens, missing_eos_penalty."""
    return dict(max_new_tokens=tuple(cfg.max_new_tokens_range) if cfg.max_new_tokens_range else cfg.max_new_tokens,
                min_new_tokens=cfg.min_new_tokens, missing_eos_penalty=cfg.missing_eos_penalty)


def _longest(cfg: RLHFConfig) -> int:
    return cfg.max_new_tokens_range[1] if cfg.max_new_tokens_range else cfg.max_new_tokens


def held_out(cfg: RLHFConfig, sft_dir: Path, rm_dir: Path, agent: Agent) -> dict[str, Any]:
    """Held-out prompts (test split) scored by the trained reward model, under the training length controls;
    same seed → same prompts."""
    envs = gym.make_vec("TextGen-IMDB-v0", num_envs=cfg.eval_prompts, vectorization_mode="vector_entry_point",
                        model=str(sft_dir), reward_model=str(rm_dir), split="test", kl_coef=cfg.kl_coef, device="auto",
                        **_length_kwargs(cfg))
    with torch.no_grad():
        res = evaluate_text(agent, envs, _longest(cfg), seed=10_000 + cfg.seed)
    envs.close()
    return res


def ppo_config(cfg: RLHFConfig, sft_dir: Path, rm_dir: Path) -> TrainConfig:
    """The ``runners.train`` config of the PPO stage: the TextGen-IMDB-v0 PPO preset with this pipeline's models,
    length controls, budget and KL control."""
    tcfg = train_preset("TextGen-IMDB-v0", "ppo")
    num_steps = _longest(cfg) + 1
    return dataclasses.replace(
        tcfg, model=str(sft_dir), reward_model=str(rm_dir), max_new_tokens=_longest(cfg),
        max_new_tokens_range=cfg.max_new_tokens_range, min_new_tokens=cfg.min_new_tokens,
        missing_eos_penalty=cfg.missing_eos_penalty, num_envs=cfg.num_envs, num_steps=num_steps,
        total_timesteps=cfg.num_envs * num_steps * cfg.ppo_updates * distributed.world_size(),  # all ranks
        agent=dataclasses.replace(tcfg.agent, learning_rate=cfg.learning_rate),
        kl_coef=cfg.kl_coef, kl_target=cfg.kl_target, kl_horizon=cfg.kl_horizon,
        # a fresh run per invocation (the pid keeps two pipelines started in the same second apart)
        run_name=f"rlhf-{cfg.preset}-ppo__{cfg.seed}__{int(time.time())}_{os.getpid()}",
        log_dir=cfg.log_dir, seed=cfg.seed, threads=cfg.threads, max_minutes=cfg.ppo_max_minutes,
        dist_timeout=cfg.dist_timeout)


def _ppo_stage(cfg: RLHFConfig, sft_dir: Path, rm_dir: Path) -> dict[str, Any]:
    return train(ppo_config(cfg, sft_dir, rm_dir))


def report_markdown(rep: dict[str, Any], samples: int = 5) -> str:
    """The markdown report: timings, stage metrics, before/after held-out table, checks and paired samples."""
    b, a, c, t, conf = rep["before"], rep["after"], rep["checks"], rep["timings"], rep["config"]
    fmt = lambda x, spec=".3f": "n/a" if x is None else format(x, spec)  # noqa: E731
    total = sum(t.values())
    lines = [
        f"# RLHF pipeline report (preset `{conf['preset']}`)", "",
        "| stage | steps | wall time (s) |", "|-|-|-|",
        f"| SFT | {conf['sft_steps']} optimizer steps | {t['sft_seconds']:.0f} |",
        f"| reward model | {conf['rm_steps']} optimizer steps | {t['rm_seconds']:.0f} |",
        f"| PPO | {conf['ppo_updates']} updates ({rep['ppo']['global_step']} env steps) | {t['ppo_seconds']:.0f} |",
        f"| held-out evaluation (before + after) | {2 * b['episodes']} responses | {t['eval_seconds']:.0f} |",
        f"| total | | {total:.0f} ({total / 60:.1f} min) |", "",
    ]
    sft_m = rep["stages"].get("sft", {})
    rm_m = rep["stages"].get("reward_model", {})
    for stage, why in (("SFT", sft_m.get("stopped_early")), ("reward model", rm_m.get("stopped_early")),
                       ("PPO", rep["ppo"].get("stopped_early"))):
        if why:
            lines += [f"**{stage} stopped early** ({why}).", ""]
    if sft_m:
        lines.append(f"- SFT held-out perplexity: {sft_m.get('eval_perplexity', float('nan')):.1f}")
    if rm_m:
        lines.append(f"- reward model pairwise accuracy on {rm_m.get('eval_pairs', '?')} held-out IMDB test pairs: "
                     f"{fmt(rm_m.get('eval_accuracy'))} (on {rm_m.get('short_eval_words', '?')}-word prefixes: "
                     f"{fmt(rm_m.get('eval_accuracy_short'))})")
    if not (sft_m and rm_m):
        lines.append("- (a stage was reused from an earlier run in this output dir: its metrics and time are not here)")
    span = (f"{conf['max_new_tokens_range'][0]}..{conf['max_new_tokens_range'][1]}" if conf["max_new_tokens_range"]
            else str(conf["max_new_tokens"]))
    lines += [
        f"- length controls: max_new_tokens {span}, min_new_tokens {conf['min_new_tokens']} (EOS masked before it), "
        f"missing_eos_penalty {conf['missing_eos_penalty']}", "",
        f"Held-out prompts (IMDB test split, n = {b['episodes']}, the same prompts before and after; sampled at "
        "temperature 1 under the same length controls):", "",
        *table_head(), "| before PPO (SFT policy) | " + metrics_row(b), "| after PPO | " + metrics_row(a), "",
        f"- score gain (paired by prompt): {c['gain']:+.3f} ± {c['gain_sem']:.3f} s.e. = **{c['gain_in_sems']:.1f} "
        "standard errors**",
        f"- response length after / before: tokens {c['length_ratio_tokens']:.2f}, characters "
        f"{c['length_ratio_chars']:.2f}",
        f"- KL to the reference during the last PPO updates: {fmt(c['final_kl'])} nats/episode (target "
        f"{c['kl_target']}); held-out after PPO: {a['kl_mean']:.3f}",
        f"- trained policy: `{rep['policy_dir']}` (AutoModelForCausalLM.from_pretrained; `--model` of a new run)", "",
        "## Samples (same prompt, before → after; the first rows of the eval batch)", "",
        "| prompt | before | score | after | score |", "|-|-|-|-|-|",
    ]
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    for sb, sa in list(zip(b["samples"], a["samples"]))[:samples]:
        lines.append(f"| {esc(sb['prompt'])} | {esc(sb['response'])} | {sb['score']:.2f} | "
                     f"{esc(sa['response'])} | {sa['score']:.2f} |")
    lines += ["", f"TensorBoard: `tensorboard --logdir {rep['tensorboard'][0]}` (PPO run: `{rep['tensorboard'][1]}`)."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> RLHFConfig:
    """``--preset`` picks the defaults, tyro parses the rest on top of them."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    known, _ = pre.parse_known_args(argv)
    return cli.parse(RLHFConfig, "runners.rlhf", __doc__, args=argv, default=PRESETS[known.preset])


def main(cfg: RLHFConfig | None = None) -> dict[str, Any]:
    cfg = cfg or parse_args()
    try:
        rep = run_stages(cfg)
    finally:
        distributed.shutdown()
    if "output_dir" not in rep:  # a torchrun rank other than 0: rank 0 writes the report
        return rep
    out = Path(rep["output_dir"])
    (out / "report.json").write_text(json.dumps(rep, indent=2, default=str))
    md = report_markdown(rep)
    (out / "report.md").write_text(md)
    print(md)
    return rep


if __name__ == "__main__":
    main()
