"""Reward-model training (stage 2 of RLHF): a transformer trunk with a one-output linear head.

The model is ``AutoModelForSequenceClassification`` with ``num_labels=1``; its scalar
output ``logits[:, 0]`` (read at the last non-pad token) is the reward. It is trained on
preference pairs with the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected)``.

Data: any JSON-lines file of ``{"prompt"?: str, "chosen": str, "rejected": str}`` (the
prompt, if any, is prepended verbatim to both answers), or pairs built from IMDB by
:func:`~runners.common.preferences.build_imdb_pairs`: a positive review is preferred over a negative one.

    python -m runners.sft --preset tiny && python -m runners.train_reward --preset tiny  # -> artifacts/rm-tiny
    python -m runners.train_reward --preset tiny-scratch   # no SFT: own tokenizer -> artifacts/rm-tiny-scratch
    python -m runners.train_reward --init gpt2 --pairs prefs.jsonl --output-dir artifacts/rm

The output directory (model.safetensors, config.json with num_labels=1, tokenizer saved
with right padding) is what ``gym.make("TextGen-IMDB-v0", reward_model=PATH)`` loads:
``num_labels == 1`` means "the scalar score is the reward". GPT-2 style trunks take
positions from the start of the row, so score right-padded batches (or pass
``position_ids``). ``metrics.json`` holds held-out pairwise accuracy and the reward mean/std
on held-out reviews (handy for normalising rewards).
"""

from __future__ import annotations

import dataclasses
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2ForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from agents.validate import check_fields
from envs.imdb import load_imdb
from runners.common import distributed
from runners.common.cli import cli_with_presets, quiet_transformers
from runners.common.preferences import build_imdb_pairs, load_preference_pairs
from runners.common.supervised import (
    BudgetBar,
    Stopwatch,
    adamw,
    batch_indices,
    budget_seconds,
    load_training_state,
    log_train_loss,
    optimizer_step,
    plain_config,
    prepare_output,
    require_progress,
    save_model_dir,
    set_lr,
    stop_report,
)
from runners.common.tiny_lm import tiny_gpt2_config, train_tokenizer


@dataclass(frozen=True)
class RewardConfig:
    """Train a scalar reward model on preference pairs."""

    init: str | None = None
    """Trunk: hub id or local dir (e.g. an SFT output); None trains a small GPT-2 from scratch."""
    preset: Literal["none", "tiny", "tiny-scratch"] = "none"
    """Offline IMDB presets, ~9 min on 2 free cores: 'tiny' (trunk from artifacts/sft-tiny), 'tiny-scratch'."""
    output_dir: str = "artifacts/rm"
    pairs: str | None = None
    """JSON-lines preference file (prompt?, chosen, rejected); None = build pairs from IMDB."""
    eval_pairs: str | None = None
    """Held-out preference file; None = IMDB test pairs (or 5% of --pairs)."""
    data: str | None = None
    """IMDB source for built pairs (see envs.imdb.load_imdb)."""
    n_train_pairs: int = 20000
    n_eval_pairs: int = 1000
    prefix_words: tuple[int, int] | None = (8, 64)
    """Built IMDB training pairs: keep a random 8..64-word prefix of each review (None = whole)."""
    short_eval_words: int = 20
    """Also report accuracy on test pairs cut to this many words (what the RM sees in RL)."""
    max_length: int = 96
    """Token budget per text (longer texts are truncated on the right)."""
    batch_size: int = 32
    learning_rate: float = 5e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_steps: int = 1000
    max_minutes: float | None = None
    """Optional wall-clock cap in minutes: only stops the run early, loudly (stopped_early in metrics.json);
    the schedule depends on the step alone, so a run that is not stopped is reproducible."""
    eval_every: int = 100
    save_every: int = 100
    """steps between saves of the model and its training state to output_dir (for --resume)"""
    resume: bool = False
    """continue from training_state.pt in output_dir (model, optimizer, step, RNG)"""
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = 2
    log_dir: str = "runs"
    vocab_size: int = 8192
    tokenizer_reviews: int = 5000
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128

    def __post_init__(self) -> None:
        check_fields(self, {
            "n_train_pairs": "int>=1", "n_eval_pairs": "int>=1", "short_eval_words": "int>=1", "max_length": "int>=1",
            "batch_size": "int>=1", "learning_rate": ">0", "min_lr_ratio": "[0,1]", "warmup_steps": "int>=0",
            "weight_decay": ">=0", "grad_clip": ">0", "max_steps": "int>=1", "max_minutes": ">0?",
            "eval_every": "int>=1", "save_every": "int>=1", "seed": "int>=0", "num_threads": "int>=1?",
            "vocab_size": "int>=1", "tokenizer_reviews": "int>=1", "n_layer": "int>=1", "n_head": "int>=1",
            "n_embd": "int>=1",
        }, extra={
            f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})":
                lambda: self.n_embd % self.n_head == 0,
            f"prefix_words must be None or (lo, hi) with 1 <= lo <= hi, got {self.prefix_words}":
                lambda: self.prefix_words is None or 1 <= self.prefix_words[0] <= self.prefix_words[1],
        })


PRESETS: dict[str, RewardConfig] = {
    # trunk from the SFT preset, as in real RLHF: 4-layer GPT-2, ~1 s/step -> ~9 min on 2 idle cores
    "tiny": RewardConfig(preset="tiny", init="artifacts/sft-tiny", output_dir="artifacts/rm-tiny",
                         learning_rate=3e-4, warmup_steps=50, max_steps=500, eval_every=100),
    # no SFT needed: own tokenizer, 2-layer GPT-2, ~0.2 s/step -> ~9 min (held-out accuracy plateaus ~0.84)
    "tiny-scratch": RewardConfig(preset="tiny-scratch", output_dir="artifacts/rm-tiny-scratch", n_train_pairs=40000,
                                 learning_rate=1e-3, warmup_steps=100, max_steps=2500, eval_every=500),
}


def preset_config(name: str = "tiny", **overrides: Any) -> RewardConfig:
    """The ``--preset NAME`` config with ``overrides`` applied (for in-process callers)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def tiny_config(**overrides: Any) -> RewardConfig:
    """The ``--preset tiny`` config (trunk from an SFT dir) with ``overrides`` applied."""
    return preset_config("tiny", **overrides)


def pairwise_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry loss: mean of ``-log sigmoid(r_chosen - r_rejected)`` over the batch (B,) -> ()."""
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"reward shapes differ: {tuple(r_chosen.shape)} vs {tuple(r_rejected.shape)}")
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def score_texts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int,
                device: torch.device) -> torch.Tensor:
    """Rewards of ``texts`` (right-padded, truncated to ``max_length`` tokens): (len(texts),)."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
    return model(**batch).logits[:, 0]


@torch.no_grad()
def pairwise_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[dict], max_length: int,
                      device: torch.device,
                      batch_size: int = 64) -> tuple[float, float, torch.Tensor]:
    """Fraction of pairs with r_chosen > r_rejected, the mean loss, and all rewards (2 * len(pairs),)."""
    model.eval()
    correct, loss, rewards = 0.0, 0.0, []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        texts = [p["prompt"] + p["chosen"] for p in chunk] + [p["prompt"] + p["rejected"] for p in chunk]
        r = score_texts(model, tokenizer, texts, max_length, device)  # (2B,)
        r_c, r_r = r[: len(chunk)], r[len(chunk) :]
        correct += (r_c > r_r).sum().item()
        loss += pairwise_loss(r_c, r_r).item() * len(chunk)
        rewards.append(r.cpu())
    model.train()
    return correct / len(pairs), loss / len(pairs), torch.cat(rewards)


def build_reward_model(cfg: RewardConfig, tokenizer_texts: list[str] | None = None,
                       ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The trunk + scalar head and its tokenizer (padding on the right, pad id in the config).

    Without ``cfg.init`` a tokenizer is trained on ``tokenizer_texts`` and a GPT-2 built from scratch.
    """
    if cfg.init is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(cfg.init)
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            with torch.random.fork_rng(devices=[]):  # the new score head is initialised from the seed
                torch.manual_seed(cfg.seed)
                model = AutoModelForSequenceClassification.from_pretrained(
                    cfg.init, num_labels=1, pad_token_id=tokenizer.pad_token_id)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load a trunk from --init {cfg.init!r} ({e}); pass a local model dir "
                             "(for artifacts/sft-tiny run `python -m runners.sft --preset tiny` first), a reachable "
                             "hub id, or use --preset tiny-scratch / no --init to train from scratch") from None
    else:
        if not tokenizer_texts:
            raise ValueError("training a reward model from scratch needs tokenizer_texts (or set init)")
        tokenizer = train_tokenizer(tokenizer_texts[: cfg.tokenizer_reviews], vocab_size=cfg.vocab_size)
        config = tiny_gpt2_config(tokenizer, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                                  n_positions=max(256, cfg.max_length), num_labels=1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = GPT2ForSequenceClassification(config)
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _datasets(cfg: RewardConfig) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    """Train pairs, held-out pairs, short held-out pairs and texts for a from-scratch tokenizer."""
    if cfg.pairs is not None:
        train = load_preference_pairs(cfg.pairs)
        if cfg.eval_pairs is not None:
            held_out = load_preference_pairs(cfg.eval_pairs)
        else:
            random.Random(cfg.seed).shuffle(train)
            n_eval = max(1, len(train) // 20)
            held_out, train = train[:n_eval], train[n_eval:]
        texts = [p["prompt"] + p[k] for p in train for k in ("chosen", "rejected")]
        return train, held_out, [], texts
    train_rows = load_imdb("train", source=cfg.data)
    test_rows = load_imdb("test", source=cfg.data)
    train = build_imdb_pairs(train_rows, cfg.n_train_pairs, seed=cfg.seed, prefix_words=cfg.prefix_words)
    held_out = (load_preference_pairs(cfg.eval_pairs) if cfg.eval_pairs is not None
                else build_imdb_pairs(test_rows, cfg.n_eval_pairs, seed=cfg.seed + 1))
    w = cfg.short_eval_words
    short = build_imdb_pairs(test_rows, cfg.n_eval_pairs, seed=cfg.seed + 2, prefix_words=(w, w))
    texts = [row["text"] for row in random.Random(cfg.seed).sample(train_rows, min(len(train_rows), 20000))]
    return train, held_out, short, texts


def _load_saved_reward_model(out: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and tokenizer of a reward-model dir written by :func:`run_reward_training` (for --resume)."""
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer.padding_side = tokenizer.truncation_side = "right"
    return model, tokenizer


@dataclass
class RewardRun:
    """A running reward-model stage: what :func:`run_reward_training` builds once and every step updates."""

    cfg: RewardConfig
    out: Path
    device: torch.device
    clock: Stopwatch
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    writer: SummaryWriter
    train: list[dict]
    held_out: list[dict]
    short: list[dict]
    step: int = 0
    running: float | None = None  # smoothed training loss


def _model_and_data(cfg: RewardConfig, out: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, list[dict],
                                                            list[dict], list[dict]]:
    """The model (saved one on --resume; a bad --init fails before the data is loaded) and the pair sets."""
    if cfg.resume:
        model, tokenizer = _load_saved_reward_model(out)
        train, held_out, short, _ = _datasets(cfg)
    elif cfg.init is not None:
        model, tokenizer = build_reward_model(cfg)
        train, held_out, short, _ = _datasets(cfg)
    else:
        train, held_out, short, texts = _datasets(cfg)
        model, tokenizer = build_reward_model(cfg, texts)
    if len(train) < cfg.batch_size:
        raise ValueError(f"{len(train)} training pairs < batch_size {cfg.batch_size}; add pairs or lower it")
    return model, tokenizer, train, held_out, short


def _log_dir(cfg: RewardConfig, out: Path) -> Path:
    return Path(cfg.log_dir) / "reward" / out.name


def _start(cfg: RewardConfig, out: Path, device: torch.device, clock: Stopwatch) -> RewardRun:
    """Model, pairs, optimizer (restored on --resume) and TensorBoard writer."""
    state = load_training_state(out) if cfg.resume else {}
    model, tokenizer, train, held_out, short = _model_and_data(cfg, out)
    model.to(device).train()
    optimizer = adamw(model, cfg.learning_rate, cfg.weight_decay)
    step, running = 0, None
    if state:
        optimizer.load_state_dict(state["optimizer"])
        step, running = int(state["step"]), state.get("running")
        torch.set_rng_state(state["torch_rng"])  # dropout masks continue as in an uninterrupted run
    writer = SummaryWriter(str(_log_dir(cfg, out)), purge_step=step + 1 if state else None)
    return RewardRun(cfg, out, device, clock, model, tokenizer, optimizer, writer, train, held_out, short,
                     step=step, running=running)


def _save(run: RewardRun, metrics: dict[str, Any] | None = None) -> None:
    state = {"step": run.step, "running": run.running, "optimizer": run.optimizer.state_dict(),
             "torch_rng": torch.get_rng_state(), "config": plain_config(run.cfg)}
    save_model_dir(run.model, run.tokenizer, run.out, state, metrics)


def _train_step(run: RewardRun, bar: BudgetBar) -> None:
    """One optimizer step on the next batch of pairs, its logs, and the periodic evaluation and save."""
    cfg = run.cfg
    lr = set_lr(run.optimizer, run.step, cfg)
    chunk = [run.train[i] for i in batch_indices(run.step, len(run.train), cfg.batch_size, cfg.seed).tolist()]
    texts = [p["prompt"] + p["chosen"] for p in chunk] + [p["prompt"] + p["rejected"] for p in chunk]
    rewards = score_texts(run.model, run.tokenizer, texts, cfg.max_length, run.device)  # (2B,)
    loss = pairwise_loss(rewards[: len(chunk)], rewards[len(chunk) :])
    optimizer_step(run.model, run.optimizer, loss, cfg.grad_clip)
    run.step += 1
    run.running = log_train_loss(run.writer, bar, run.step, loss, lr, run.running, run.clock.elapsed())
    if run.step % cfg.eval_every == 0:
        acc, eval_loss, _ = pairwise_accuracy(run.model, run.tokenizer, run.held_out, cfg.max_length, run.device)
        run.writer.add_scalar("eval/accuracy", acc, run.step)
        run.writer.add_scalar("eval/loss", eval_loss, run.step)
        bar.update(run.step, run.clock.elapsed(), loss=f"{run.running:.3f}", acc=f"{acc:.3f}")
    if run.step % cfg.save_every == 0 and run.step < cfg.max_steps:
        _save(run)


def _train(run: RewardRun) -> None:
    """Optimizer steps until ``max_steps`` (or the wall-clock cap)."""
    cfg = run.cfg
    budget_s = budget_seconds(cfg.max_minutes)
    print(f"reward model: saving to {run.out} (TensorBoard: {_log_dir(cfg, run.out)})", file=sys.stderr)
    bar = BudgetBar(cfg.max_steps, budget_s, run.step, desc="reward")
    while run.step < cfg.max_steps and run.clock.elapsed() < budget_s:
        _train_step(run, bar)
    bar.close()


def _finish(run: RewardRun) -> dict[str, Any]:
    """Held-out accuracy (and on short prefixes) and reward statistics; the metrics, saved with the model."""
    cfg, step = run.cfg, run.step
    require_progress(step, "reward model", run.out)
    stopped = stop_report(step, cfg.max_steps, cfg.max_minutes, "reward model")
    acc, eval_loss, rewards = pairwise_accuracy(run.model, run.tokenizer, run.held_out, cfg.max_length, run.device)
    metrics: dict[str, Any] = {
        "step": step, "wall_time_s": run.clock.elapsed(), "eval_accuracy": acc, "eval_loss": eval_loss,
        "train_loss": run.running, "train_pairs": len(run.train), "eval_pairs": len(run.held_out),
        "reward_mean": rewards.mean().item(), "reward_std": rewards.std().item(),
        "num_params": sum(p.numel() for p in run.model.parameters()), "max_length": cfg.max_length,
        "output_dir": str(run.out.resolve()), **stopped}
    run.writer.add_scalar("eval/accuracy", acc, step)
    if run.short:
        metrics["eval_accuracy_short"], _, _ = pairwise_accuracy(run.model, run.tokenizer, run.short, cfg.max_length,
                                                                 run.device)
        metrics["short_eval_words"] = cfg.short_eval_words
        run.writer.add_scalar("eval/accuracy_short", metrics["eval_accuracy_short"], step)
    run.writer.close()
    _save(run, metrics)
    return metrics


def run_reward_training(cfg: RewardConfig) -> dict[str, Any]:
    """Train the reward model as configured, save it atomically and return the metrics dict."""
    quiet_transformers()  # our progress bars show the run, not transformers' loading bars
    clock = Stopwatch()  # the time budget covers data preparation too
    device, out = prepare_output(cfg)
    run = _start(cfg, out, device, clock)
    _train(run)
    return _finish(run)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point: ``python -m runners.train_reward --help``."""
    distributed.require_single_process("runners.train_reward")
    cfg = cli_with_presets(RewardConfig, PRESETS, argv, description=__doc__, module="runners.train_reward")
    metrics = run_reward_training(cfg)
    short = metrics.get("eval_accuracy_short")
    print(f"step {metrics['step']}  held-out pairwise accuracy {metrics['eval_accuracy']:.3f}"
          + (f"  ({cfg.short_eval_words}-word prefixes: {short:.3f})" if short is not None else "")
          + f"  wall {metrics['wall_time_s'] / 60:.1f} min  -> {metrics['output_dir']}")
    return metrics


if __name__ == "__main__":
    main()
