"""Reward-model training (stage 2 of RLHF): a transformer trunk with a one-output linear head.

The model is ``AutoModelForSequenceClassification`` with ``num_labels=1``; its scalar
output ``logits[:, 0]`` (read at the last non-pad token) is the reward. It is trained on
preference pairs with the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected)``.

Data: any JSON-lines file of ``{"prompt"?: str, "chosen": str, "rejected": str}`` (the
prompt, if any, is prepended verbatim to both answers), or pairs built from IMDB by
:func:`build_imdb_pairs`: a positive review is preferred over a negative one.

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
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2ForSequenceClassification,
)

from agents.validate import check_fields
from envs.imdb import iter_jsonl, load_imdb
from runners.common import distributed
from runners.common.atomic import check_writable
from runners.common.cli import quiet_transformers
from runners.common.tiny_lm import (
    BudgetBar,
    cli_with_presets,
    recover_pretrained_dir,
    require_progress,
    resolve_device,
    save_pretrained_atomic,
    stop_report,
    tiny_gpt2_config,
    train_tokenizer,
)
from runners.sft import STATE_FILE, batch_indices, load_training_state, lr_factor


@dataclass
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
            f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})": lambda: self.n_embd % self.n_head == 0,
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


def preset_config(name: str = "tiny", **overrides) -> RewardConfig:
    """The ``--preset NAME`` config with ``overrides`` applied (for in-process callers)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def tiny_config(**overrides) -> RewardConfig:
    """The ``--preset tiny`` config (trunk from an SFT dir) with ``overrides`` applied."""
    return preset_config("tiny", **overrides)


def pairwise_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry loss: mean of ``-log sigmoid(r_chosen - r_rejected)`` over the batch (B,) -> ()."""
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"reward shapes differ: {tuple(r_chosen.shape)} vs {tuple(r_rejected.shape)}")
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def _prefix(text: str, n_words: int) -> str:
    return " ".join(text.split()[:n_words])


def build_imdb_pairs(
    rows: list[dict],
    n_pairs: int,
    seed: int = 0,
    max_chars: int | None = None,
    prefix_words: tuple[int, int] | None = None,
) -> list[dict]:
    """Preference pairs from labelled reviews: a positive review (chosen) beats a negative one.

    Positives and negatives are each drawn in a seeded random order without replacement
    (reshuffled when a class runs out), and paired position by position. With
    ``prefix_words=(lo, hi)`` every text is cut to its first k words, k drawn uniformly
    from [lo, hi] independently for both sides, so length carries no preference signal and
    the model learns to score short texts, as it must for 16-24-token generations.
    ``max_chars`` then cuts at the last word boundary within that many characters.
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if any("label" not in row for row in rows):
        raise ValueError("every row needs a 'label' (0 negative / 1 positive); the unsup split has none")
    pos = [row["text"] for row in rows if row["label"] == 1]
    neg = [row["text"] for row in rows if row["label"] == 0]
    if not pos or not neg:
        raise ValueError(f"need both classes, got {len(pos)} positive and {len(neg)} negative reviews")
    if prefix_words is not None and not 1 <= prefix_words[0] <= prefix_words[1]:
        raise ValueError(f"prefix_words must be (lo, hi) with 1 <= lo <= hi, got {prefix_words}")
    rng = random.Random(seed)

    def draw(texts: list[str]):
        while True:
            order = list(range(len(texts)))
            rng.shuffle(order)
            yield from (texts[i] for i in order)

    def shorten(text: str) -> str:
        if prefix_words is not None:
            text = _prefix(text, rng.randint(*prefix_words))
        if max_chars is not None and len(text) > max_chars:
            cut = text[:max_chars]
            text = cut.rsplit(" ", 1)[0] if " " in cut else cut
        return text

    pos_iter, neg_iter = draw(pos), draw(neg)
    return [{"prompt": "", "chosen": shorten(next(pos_iter)), "rejected": shorten(next(neg_iter))}
            for _ in range(n_pairs)]


def load_preference_pairs(path: str | Path) -> list[dict]:
    """Read a .jsonl / .jsonl.gz preference file: each line ``{"prompt"?, "chosen", "rejected"}``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"preference file not found: {path}")
    pairs = []
    for where, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("chosen", "rejected")):
            raise ValueError(f'{where}: each line needs string "chosen" and "rejected" fields')
        prompt = obj.get("prompt") or ""
        if not isinstance(prompt, str):
            raise ValueError(f'{where}: "prompt" must be a string')
        pairs.append({"prompt": prompt, "chosen": obj["chosen"], "rejected": obj["rejected"]})
    if not pairs:
        raise ValueError(f"{path} holds no preference pairs")
    return pairs


def score_texts(model, tokenizer, texts: list[str], max_length: int, device: torch.device) -> torch.Tensor:
    """Rewards of ``texts`` (right-padded, truncated to ``max_length`` tokens): (len(texts),)."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
    return model(**batch).logits[:, 0]


@torch.no_grad()
def pairwise_accuracy(model, tokenizer, pairs: list[dict], max_length: int, device: torch.device,
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


def build_reward_model(cfg: RewardConfig, tokenizer_texts: list[str] | None = None):
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


def _load_saved_reward_model(out: Path):
    """The model and tokenizer of a reward-model dir written by :func:`run_reward_training` (for --resume)."""
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer.padding_side = tokenizer.truncation_side = "right"
    return model, tokenizer


def run_reward_training(cfg: RewardConfig) -> dict:
    """Train the reward model as configured, save it atomically and return the metrics dict."""
    quiet_transformers()  # our progress bars show the run, not transformers' loading bars
    start = time.monotonic()  # the time budget covers data preparation too
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)  # dropout masks: same seed, same model
    device = resolve_device(cfg.device)
    out = Path(cfg.output_dir).expanduser()
    check_writable(out, "output")  # fail now, not after training
    check_writable(Path(cfg.log_dir), "log")
    recover_pretrained_dir(out)  # finish or undo a save that a crash interrupted
    state: dict = {}
    if cfg.resume:
        state = load_training_state(out)
        model, tokenizer = _load_saved_reward_model(out)
        train, held_out, short, _ = _datasets(cfg)
    elif cfg.init is not None:
        model, tokenizer = build_reward_model(cfg)  # a bad --init fails before the data is loaded
        train, held_out, short, _ = _datasets(cfg)
    else:
        train, held_out, short, texts = _datasets(cfg)
        model, tokenizer = build_reward_model(cfg, texts)
    if len(train) < cfg.batch_size:
        raise ValueError(f"{len(train)} training pairs < batch_size {cfg.batch_size}; add pairs or lower it")
    model.to(device).train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate)
    step, running = 0, None
    if state:
        optimizer.load_state_dict(state["optimizer"])
        step, running = int(state["step"]), state.get("running")
        torch.set_rng_state(state["torch_rng"])  # dropout masks continue as in an uninterrupted run
    writer = SummaryWriter(str(Path(cfg.log_dir) / "reward" / out.name), purge_step=step + 1 if state else None)
    budget_s = cfg.max_minutes * 60 if cfg.max_minutes else math.inf

    def save(metrics: dict | None = None) -> None:
        payload = {"step": step, "running": running, "optimizer": optimizer.state_dict(),
                   "torch_rng": torch.get_rng_state(), "config": json.loads(json.dumps(dataclasses.asdict(cfg)))}

        def extra(tmp: Path) -> None:
            torch.save(payload, tmp / STATE_FILE)
            if metrics is not None:
                (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))

        save_pretrained_atomic(model, tokenizer, out, extra=extra)

    print(f"reward model: saving to {out} (TensorBoard: {Path(cfg.log_dir) / 'reward' / out.name})", file=sys.stderr)
    bar = BudgetBar(cfg.max_steps, budget_s, step, desc="reward")
    while step < cfg.max_steps and time.monotonic() - start < budget_s:
        lr = cfg.learning_rate * lr_factor(step, step / cfg.max_steps, cfg.warmup_steps, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        chunk = [train[i] for i in batch_indices(step, len(train), cfg.batch_size, cfg.seed).tolist()]
        texts_b = [p["prompt"] + p["chosen"] for p in chunk] + [p["prompt"] + p["rejected"] for p in chunk]
        rewards = score_texts(model, tokenizer, texts_b, cfg.max_length, device)  # (2B,)
        loss = pairwise_loss(rewards[: len(chunk)], rewards[len(chunk) :])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        if step % 10 == 0:  # one host sync every 10 steps
            value = loss.item()
            running = value if running is None else 0.9 * running + 0.1 * value
            writer.add_scalar("train/loss", value, step)
            writer.add_scalar("train/lr", lr, step)
            bar.update(step, time.monotonic() - start, loss=f"{running:.3f}")
        else:
            bar.update(step, time.monotonic() - start)
        if step % cfg.eval_every == 0:
            acc, eval_loss, _ = pairwise_accuracy(model, tokenizer, held_out, cfg.max_length, device)
            writer.add_scalar("eval/accuracy", acc, step)
            writer.add_scalar("eval/loss", eval_loss, step)
            bar.update(step, time.monotonic() - start, loss=f"{running:.3f}", acc=f"{acc:.3f}")
        if step % cfg.save_every == 0 and step < cfg.max_steps:
            save()
    bar.close()
    require_progress(step, "reward model", out)
    stopped = stop_report(step, cfg.max_steps, cfg.max_minutes, "reward model")

    acc, eval_loss, rewards = pairwise_accuracy(model, tokenizer, held_out, cfg.max_length, device)
    metrics: dict = {"step": step, "wall_time_s": time.monotonic() - start, "eval_accuracy": acc,
                     "eval_loss": eval_loss, "train_loss": running, "train_pairs": len(train),
                     "eval_pairs": len(held_out), "reward_mean": rewards.mean().item(),
                     "reward_std": rewards.std().item(), "num_params": sum(p.numel() for p in model.parameters()),
                     "max_length": cfg.max_length, "output_dir": str(out.resolve()), **stopped}
    writer.add_scalar("eval/accuracy", acc, step)
    if short:
        metrics["eval_accuracy_short"], _, _ = pairwise_accuracy(model, tokenizer, short, cfg.max_length, device)
        metrics["short_eval_words"] = cfg.short_eval_words
        writer.add_scalar("eval/accuracy_short", metrics["eval_accuracy_short"], step)
    writer.close()
    save(metrics)
    return metrics


def main(argv: list[str] | None = None) -> dict:
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
