"""Supervised fine-tuning (stage 1 of RLHF): next-token training of a causal LM on IMDB reviews.

Any ``transformers`` causal LM (hub id or local directory) is trained on review text
packed into fixed-length blocks, with the eos token appended after every review so the
model learns to end one. ``--preset tiny`` needs no download: it trains its own byte-level
BPE tokenizer and a small GPT-2 from scratch (1200 steps, ~9 minutes on 2 idle CPU cores).

    python -m runners.sft --preset tiny                      # -> artifacts/sft-tiny
    python -m runners.sft --model gpt2 --output-dir artifacts/sft-gpt2 --max-steps 5000
    python -m runners.sft --preset tiny --resume --max-steps 2000   # continue a run

Training length is a number of optimizer steps (the LR schedule is a function of the step
only), so the same command and seed give bit-identical weights on CPU for the same torch
version and thread count. ``--max-minutes`` is only a guard: it stops the run early, says
so on stderr and records ``stopped_early`` in ``metrics.json``.

The output directory is a standard Hugging Face model dir (config.json, model.safetensors,
tokenizer files) that ``AutoModelForCausalLM.from_pretrained`` loads, plus
``training_state.pt`` (optimizer, step, elapsed time) for ``--resume`` and
``metrics.json``. Every save is atomic. Held-out perplexity is measured on test reviews;
TensorBoard curves (train/loss, eval/perplexity, ...) go to ``runs/sft/<output name>``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.tensorboard import SummaryWriter
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from agents.validate import check_fields
from envs.imdb import load_imdb
from runners.common import distributed
from runners.common.cli import cli_with_presets, quiet_transformers
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
from runners.common.tiny_lm import make_tiny_lm, train_tokenizer


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning of a causal LM on IMDB reviews."""

    model: str | None = None
    """Hub id or local dir of a causal LM to fine-tune; None trains a small GPT-2 from scratch."""
    preset: Literal["none", "tiny"] = "none"
    """'tiny': offline from-scratch preset (own tokenizer + small GPT-2, ~10 min on 2 cores)."""
    output_dir: str = "artifacts/sft"
    data: str | None = None
    """IMDB source: None (local copy, else hub), a dir with {split}.jsonl.gz, a .jsonl[.gz] file
    (eval_reviews of it held out), or a hub id."""
    train_splits: tuple[str, ...] = ("train", "unsup")
    eval_split: str = "test"
    max_train_reviews: int | None = None
    """Cap on the reviews tokenized for training (shuffled first); None = all."""
    eval_reviews: int = 300
    block_size: int = 128
    batch_size: int = 16
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_steps: int = 2000
    max_minutes: float | None = None
    """Optional wall-clock cap in minutes (total, including resumed parts). It never changes the schedule: it only
    stops the run early, loudly (stopped_early in metrics.json). None = train all max_steps."""
    eval_every: int = 250
    save_every_minutes: float = 2.0
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = 2
    resume: bool = False
    """Continue from training_state.pt in output_dir (model, optimizer, step, elapsed time)."""
    log_dir: str = "runs"
    vocab_size: int = 8192
    """From scratch only: BPE vocabulary size."""
    tokenizer_reviews: int = 5000
    """From scratch only: reviews used to train the tokenizer."""
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    num_samples: int = 4
    sample_tokens: int = 40

    def __post_init__(self) -> None:
        check_fields(self, {
            "max_train_reviews": "int>=1?", "eval_reviews": "int>=1", "block_size": "int>=2", "batch_size": "int>=1",
            "learning_rate": ">0", "min_lr_ratio": "[0,1]", "warmup_steps": "int>=0", "weight_decay": ">=0",
            "grad_clip": ">0", "max_steps": "int>=1", "max_minutes": ">0?", "eval_every": "int>=1",
            "save_every_minutes": ">=0", "seed": "int>=0", "num_threads": "int>=1?", "vocab_size": "int>=1",
            "tokenizer_reviews": "int>=1", "n_layer": "int>=1", "n_head": "int>=1", "n_embd": "int>=1",
            "num_samples": "int>=0", "sample_tokens": "int>=1",
        }, extra={f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})":
                  lambda: self.n_embd % self.n_head == 0})


PRESETS: dict[str, SFTConfig] = {
    "tiny": SFTConfig(
        preset="tiny",
        output_dir="artifacts/sft-tiny",
        max_train_reviews=12000,
        max_steps=1200,  # ~9 min of training on 2 idle cores (0.45 s/step)
        eval_every=200,
    ),
}


def tiny_config(**overrides: Any) -> SFTConfig:
    """The ``--preset tiny`` config with ``overrides`` applied (for in-process callers)."""
    return dataclasses.replace(PRESETS["tiny"], **overrides)


def pack_blocks(token_lists: list[list[int]], eos_id: int, block_size: int) -> torch.Tensor:
    """Concatenate token lists, each followed by eos, and cut into rows: (num_blocks, block_size)."""
    flat = [tok for ids in token_lists for tok in (*ids, eos_id)]
    n_blocks = len(flat) // block_size
    if n_blocks == 0:
        raise ValueError(f"only {len(flat)} tokens: not enough text for one block of {block_size}; add data")
    return torch.tensor(flat[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)


@torch.no_grad()
def evaluate_perplexity(model: PreTrainedModel, blocks: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean next-token loss over ``blocks`` (num_blocks, L) and its exp (perplexity)."""
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    for start in range(0, len(blocks), batch_size):
        x = blocks[start : start + batch_size].to(device)  # (B, L)
        total += model(input_ids=x, labels=x).loss * len(x)
    model.train()
    loss = (total / len(blocks)).item()
    return loss, math.exp(min(loss, 50.0))


def load_model_and_tokenizer(name_or_path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, with an error that says what to pass when it fails."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"cannot load a causal LM from {name_or_path!r} ({e}). Pass a local directory holding "
            "config.json + weights + tokenizer files, a reachable hub id, or use --preset tiny."
        ) from None
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of {name_or_path!r} has no eos token; SFT appends eos after each review")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _train_eval_texts(cfg: SFTConfig) -> tuple[list[str], list[str]]:
    """Shuffled training and held-out review texts (a single file is split: eval_reviews held out)."""
    def shuffled(texts: list[str], seed: int) -> list[str]:
        random.Random(seed).shuffle(texts)
        return texts

    if cfg.data is not None and Path(cfg.data).expanduser().is_file():
        texts = shuffled([row["text"] for row in load_imdb(source=cfg.data)], cfg.seed)
        eval_texts, train_texts = texts[: cfg.eval_reviews], texts[cfg.eval_reviews :]
    else:
        train_texts = shuffled([r["text"] for s in cfg.train_splits for r in load_imdb(s, source=cfg.data)], cfg.seed)
        eval_texts = shuffled([r["text"] for r in load_imdb(cfg.eval_split, source=cfg.data)], cfg.seed + 1)
        eval_texts = eval_texts[: cfg.eval_reviews]
    if cfg.max_train_reviews is not None:
        train_texts = train_texts[: cfg.max_train_reviews]
    if not train_texts or not eval_texts:
        raise ValueError(f"need training and held-out reviews, got {len(train_texts)} and {len(eval_texts)}; "
                         "add data or lower --eval-reviews")
    return train_texts, eval_texts


def _build(cfg: SFTConfig, out: Path, resuming: bool,
           train_texts: list[str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if resuming:
        return load_model_and_tokenizer(str(out))
    if cfg.model is not None:
        return load_model_and_tokenizer(cfg.model)
    tokenizer = train_tokenizer(train_texts[: cfg.tokenizer_reviews], vocab_size=cfg.vocab_size)
    n_positions = max(256, cfg.block_size)
    model = make_tiny_lm(tokenizer, seed=cfg.seed, n_layer=cfg.n_layer, n_head=cfg.n_head,
                         n_embd=cfg.n_embd, n_positions=n_positions)
    return model, tokenizer


@torch.no_grad()
def generate_samples(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                     max_new_tokens: int, seed: int) -> list[str]:
    """Sample (top-k 50) a continuation of each prompt; returns prompt + continuation."""
    model.eval()
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues on the right
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    tokenizer.padding_side = side
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = model.generate(**batch, do_sample=True, top_k=50, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
    model.train()
    return [tokenizer.decode(row, skip_special_tokens=True) for row in out]


@dataclass
class SFTRun:
    """A running SFT stage: what :func:`run_sft` builds once and every step updates."""

    cfg: SFTConfig
    out: Path
    device: torch.device
    clock: Stopwatch
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    writer: SummaryWriter
    train_blocks: torch.Tensor  # (N, L)
    eval_blocks: torch.Tensor  # (M, L)
    eval_texts: list[str]
    step: int = 0
    start_step: int = 0  # where this part of the run started (resume: the saved step)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    running: float | None = None  # smoothed training loss


def _check_block_size(cfg: SFTConfig, model: PreTrainedModel) -> None:
    n_positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if n_positions is not None and cfg.block_size > n_positions:
        raise ValueError(f"block_size {cfg.block_size} exceeds the model's {n_positions} positions; lower --block-size")


def _blocks(cfg: SFTConfig, tokenizer: PreTrainedTokenizerBase, train_texts: list[str],
            eval_texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and held-out texts tokenized and packed into blocks: (N, L) and (M, L)."""

    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]

    train_blocks = pack_blocks(encode(train_texts), tokenizer.eos_token_id, cfg.block_size)
    eval_blocks = pack_blocks(encode(eval_texts), tokenizer.eos_token_id, cfg.block_size)
    if len(train_blocks) < cfg.batch_size:
        raise ValueError(f"{len(train_blocks)} training blocks < batch_size {cfg.batch_size}; add data")
    return train_blocks, eval_blocks


def _log_dir(cfg: SFTConfig, out: Path) -> Path:
    return Path(cfg.log_dir) / "sft" / out.name


def _start(cfg: SFTConfig, out: Path, device: torch.device, clock: Stopwatch) -> SFTRun:
    """Data, model, optimizer (restored on --resume) and TensorBoard writer; the initial held-out perplexity."""
    state = load_training_state(out) if cfg.resume else {}
    train_texts, eval_texts = _train_eval_texts(cfg)
    model, tokenizer = _build(cfg, out, cfg.resume, train_texts)
    _check_block_size(cfg, model)
    model.to(device).train()
    train_blocks, eval_blocks = _blocks(cfg, tokenizer, train_texts, eval_texts)
    optimizer = adamw(model, cfg.learning_rate, cfg.weight_decay)
    step, metrics = 0, {}
    if cfg.resume:
        optimizer.load_state_dict(state["optimizer"])
        step, clock.before = int(state["step"]), float(state["elapsed_s"])
        metrics = dict(state.get("metrics", {}))
        if "torch_rng" in state:  # dropout masks continue as in an uninterrupted run
            torch.set_rng_state(state["torch_rng"])
    writer = SummaryWriter(str(_log_dir(cfg, out)), purge_step=step if cfg.resume else None)
    run = SFTRun(cfg, out, device, clock, model, tokenizer, optimizer, writer, train_blocks, eval_blocks, eval_texts,
                 step=step, start_step=step, metrics=metrics)
    if step == 0:
        loss0, ppl0 = evaluate_perplexity(model, eval_blocks, cfg.batch_size)
        metrics.update(initial_eval_loss=loss0, initial_eval_perplexity=ppl0)
        writer.add_scalar("eval/perplexity", ppl0, 0)
    return run


def _save(run: SFTRun) -> None:
    cfg, step = run.cfg, run.step
    run.metrics.update(step=step, wall_time_s=run.clock.elapsed(), tokens_seen=step * cfg.batch_size * cfg.block_size)
    state = {"step": step, "elapsed_s": run.clock.elapsed(), "optimizer": run.optimizer.state_dict(),
             "metrics": run.metrics, "config": plain_config(cfg), "torch_rng": torch.get_rng_state()}
    save_model_dir(run.model, run.tokenizer, run.out, state, run.metrics)


def _train_step(run: SFTRun, bar: BudgetBar) -> None:
    """One optimizer step on the next batch of blocks, its logs, and the periodic evaluation and save."""
    cfg = run.cfg
    lr = set_lr(run.optimizer, run.step, cfg)
    x = run.train_blocks[batch_indices(run.step, len(run.train_blocks), cfg.batch_size, cfg.seed)].to(run.device)
    loss = run.model(input_ids=x, labels=x).loss  # x: (B, L)
    optimizer_step(run.model, run.optimizer, loss, cfg.grad_clip)
    run.step += 1
    run.running = log_train_loss(run.writer, bar, run.step, loss, lr, run.running, run.clock.elapsed(), show_lr=True)
    if run.step % cfg.eval_every == 0:
        eval_loss, ppl = evaluate_perplexity(run.model, run.eval_blocks, cfg.batch_size)
        run.writer.add_scalar("eval/loss", eval_loss, run.step)
        run.writer.add_scalar("eval/perplexity", ppl, run.step)
    if run.clock.since_saved() > cfg.save_every_minutes * 60:
        _save(run)
        run.clock.mark_saved()


def _train(run: SFTRun) -> None:
    """Optimizer steps until ``max_steps`` (or the wall-clock cap)."""
    cfg = run.cfg
    budget_s = budget_seconds(cfg.max_minutes)
    run.clock.mark_saved()
    print(f"sft: saving to {run.out} (TensorBoard: {_log_dir(cfg, run.out)})", file=sys.stderr)
    bar = BudgetBar(cfg.max_steps, budget_s, run.step, run.clock.before, desc="sft")
    while run.step < cfg.max_steps and run.clock.elapsed() < budget_s:
        _train_step(run, bar)
    bar.close()


def _finish(run: SFTRun) -> dict[str, Any]:
    """Final held-out perplexity and samples; the metrics, saved with the model."""
    cfg, writer, metrics = run.cfg, run.writer, run.metrics
    require_progress(run.step - run.start_step, "sft", run.out)
    metrics.update(stop_report(run.step, cfg.max_steps, cfg.max_minutes, "sft"))
    eval_loss, ppl = evaluate_perplexity(run.model, run.eval_blocks, cfg.batch_size)
    writer.add_scalar("eval/perplexity", ppl, run.step)
    prompts = [" ".join(t.split()[:4]) for t in run.eval_texts[: cfg.num_samples]]
    samples = generate_samples(run.model, run.tokenizer, prompts, cfg.sample_tokens, cfg.seed) if prompts else []
    for i, sample in enumerate(samples):
        writer.add_text("samples", sample, i)
    writer.close()
    metrics.update(eval_loss=eval_loss, eval_perplexity=ppl, train_loss=run.running, samples=samples,
                   num_params=sum(p.numel() for p in run.model.parameters()), train_blocks=len(run.train_blocks),
                   vocab_size=len(run.tokenizer), output_dir=str(run.out.resolve()))
    _save(run)
    return metrics


def run_sft(cfg: SFTConfig) -> dict[str, Any]:
    """Train as configured, save the model dir atomically, and return the metrics dict."""
    quiet_transformers()  # our progress bars show the run, not transformers' loading bars
    if cfg.model is None and cfg.preset != "tiny" and not cfg.resume:
        raise ValueError("pass --model (hub id or local dir) or --preset tiny to train from scratch")
    clock = Stopwatch()  # the time budget covers data loading and tokenizer training too
    device, out = prepare_output(cfg)
    run = _start(cfg, out, device, clock)
    _train(run)
    return _finish(run)

def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point: ``python -m runners.sft --help``."""
    distributed.require_single_process("runners.sft")
    cfg = cli_with_presets(SFTConfig, PRESETS, argv, description=__doc__, module="runners.sft")
    metrics = run_sft(cfg)
    print(f"step {metrics['step']}  held-out perplexity {metrics['eval_perplexity']:.2f} "
          f"(from {metrics.get('initial_eval_perplexity', float('nan')):.1f})  "
          f"wall {metrics['wall_time_s'] / 60:.1f} min  -> {metrics['output_dir']}")
    for sample in metrics["samples"]:
        print("  sample:", sample)
    return metrics


if __name__ == "__main__":
    main()
