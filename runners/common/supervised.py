"""What the two supervised RLHF stages share: ``runners.sft`` (next-token loss) and ``runners.train_reward``
(pairwise loss).

Both train for a number of optimizer steps with AdamW (no weight decay on biases and norms), a linear-warmup,
cosine-decay learning rate that depends on the step alone, a seeded epoch-wise batch order (so a resumed run takes
the batches an uninterrupted one would) and gradient clipping; an optional wall-clock cap only stops a run early,
loudly. Both save a Hugging Face model directory atomically with ``training_state.pt`` beside the weights
(``--resume``).

- start-up, clock and progress: :func:`prepare_output`, :class:`Stopwatch`, :func:`budget_seconds`,
  :class:`BudgetBar`;
- the optimisation step: :func:`adamw`, :func:`lr_factor`, :func:`set_lr`, :func:`batch_indices`,
  :func:`optimizer_step`, :func:`log_train_loss`;
- the output directory: :func:`save_model_dir`, :func:`load_training_state`, :func:`plain_config`;
- the end of a run: :func:`require_progress`, :func:`stop_report`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from envs.lm import resolve_device
from runners.common.atomic import MANIFEST, CorruptCheckpointError, check_writable, verify_manifest
from runners.common.pretrained import recover_pretrained_dir, save_pretrained_atomic

STATE_FILE = "training_state.pt"


class StageConfig(Protocol):
    """The fields of ``SFTConfig`` and ``RewardConfig`` the helpers here read."""

    @property
    def output_dir(self) -> str: ...
    @property
    def log_dir(self) -> str: ...
    @property
    def num_threads(self) -> int | None: ...
    @property
    def seed(self) -> int: ...
    @property
    def device(self) -> str: ...
    @property
    def learning_rate(self) -> float: ...
    @property
    def warmup_steps(self) -> int: ...
    @property
    def min_lr_ratio(self) -> float: ...
    @property
    def max_steps(self) -> int: ...


def prepare_output(cfg: StageConfig) -> tuple[torch.device, Path]:
    """Threads, the seed of the dropout masks and the device; the output and log directories checked writable (fail
    now, not after training) and a save of the output directory that a crash interrupted finished or undone."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)  # dropout masks: same seed, same model
    device = resolve_device(cfg.device)
    out = Path(cfg.output_dir).expanduser()
    check_writable(out, "output")
    check_writable(Path(cfg.log_dir), "log")
    recover_pretrained_dir(out)
    return device, out


class Stopwatch:
    """Seconds a stage has run on the monotonic clock (the only place the stages read it), plus ``before``: the
    seconds of the earlier parts of a resumed run."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.before = 0.0
        self.last_save = self.start

    def elapsed(self) -> float:
        return self.before + time.monotonic() - self.start

    def mark_saved(self) -> None:
        self.last_save = time.monotonic()

    def since_saved(self) -> float:
        return time.monotonic() - self.last_save


def budget_seconds(max_minutes: float | None) -> float:
    """The wall-clock cap in seconds (inf: none)."""
    return max_minutes * 60 if max_minutes else math.inf


class BudgetBar:
    """A tqdm bar over the step budget; an optional wall-clock cap is shown but only stops the run early."""

    def __init__(self, max_steps: int, budget_s: float, step: int = 0, elapsed_s: float = 0.0, desc: str = ""):
        self.max_steps, self.budget_s = max_steps, budget_s
        self.bar = tqdm(total=max_steps, initial=step, unit="step", desc=desc, dynamic_ncols=True)
        self.postfix: dict[str, object] = {}
        if math.isfinite(budget_s):
            self.postfix["cap"] = f"{budget_s / 60:g} min"
        self.update(step, elapsed_s)

    def update(self, step: int, elapsed_s: float, **postfix: object) -> None:
        """Move to ``step``; ``postfix`` values (e.g. loss) stay shown until replaced."""
        if postfix or self.postfix:
            self.postfix.update(postfix)
            self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only, not on biases and layer norms."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def lr_factor(step: int, progress: float, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_ratio`` as progress goes 0 -> 1."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return warm * (min_ratio + (1.0 - min_ratio) * cosine)


def set_lr(optimizer: torch.optim.Optimizer, step: int, cfg: StageConfig) -> float:
    """Set (and return) the learning rate of ``step``: ``cfg.learning_rate`` times :func:`lr_factor`."""
    lr = cfg.learning_rate * lr_factor(step, step / cfg.max_steps, cfg.warmup_steps, cfg.min_lr_ratio)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def batch_indices(step: int, num_blocks: int, batch_size: int, seed: int) -> torch.Tensor:
    """Rows of the training blocks for ``step``: an epoch-wise seeded permutation, so resuming is exact."""
    per_epoch = max(1, num_blocks // batch_size)
    epoch, j = divmod(step, per_epoch)
    perm = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[j * batch_size : (j + 1) * batch_size]


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   grad_clip: float) -> None:
    """Backpropagate ``loss``, clip the gradient norm to ``grad_clip`` and step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def log_train_loss(writer: SummaryWriter, bar: BudgetBar, step: int, loss: torch.Tensor, lr: float,
                   running: float | None, elapsed_s: float, show_lr: bool = False) -> float | None:
    """Move the bar to ``step``; every 10th step (one host sync per 10 steps) also log the loss and the LR and show
    the smoothed loss (and the LR if ``show_lr``). Returns the smoothed loss."""
    if step % 10:
        bar.update(step, elapsed_s)
        return running
    value = loss.item()
    running = value if running is None else 0.9 * running + 0.1 * value
    writer.add_scalar("train/loss", value, step)
    writer.add_scalar("train/lr", lr, step)
    bar.update(step, elapsed_s, loss=f"{running:.3f}", **({"lr": f"{lr:.1e}"} if show_lr else {}))
    return running


def plain_config(cfg: Any) -> dict[str, Any]:
    """A config dataclass as JSON-safe plain data (tuples as lists), as stored in ``training_state.pt``."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def save_model_dir(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path, state: dict[str, Any],
                   metrics: dict[str, Any] | None = None) -> None:
    """Save the model directory atomically with ``training_state.pt`` (``state``) and, if given, ``metrics.json``."""

    def extra(tmp: Path) -> None:
        torch.save(state, tmp / STATE_FILE)
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))

    save_pretrained_atomic(model, tokenizer, out, extra=extra)


def load_training_state(out: Path) -> dict[str, Any]:
    """``training_state.pt`` of a model dir written by a previous run (files checked against its manifest)."""
    if not (out / STATE_FILE).is_file():
        raise FileNotFoundError(f"--resume: no {STATE_FILE} in {out}; run once without --resume first")
    hint = f"Delete {out} and train again without --resume."
    if (out / MANIFEST).is_file():
        verify_manifest(out, hint)
    try:
        return torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CorruptCheckpointError(f"{out / STATE_FILE} cannot be loaded ({type(e).__name__}: {e}). {hint}") from None


def require_progress(steps_done: int, stage: str, out: object) -> None:
    """RuntimeError when a run stopped (wall-clock cap) before its first optimisation step: nothing is saved, so
    an untrained model never lands in (or over a good model in) ``out``."""
    if steps_done <= 0:
        raise RuntimeError(
            f"{stage}: stopped before the first optimisation step (the wall-clock cap --max-minutes ran out during "
            f"data loading/tokenisation); nothing was trained and nothing was written to {out}. Raise --max-minutes "
            "or drop it."
        )


def stop_report(step: int, max_steps: int, max_minutes: float | None, stage: str) -> dict[str, object]:
    """``{"stopped_early": None}`` when all ``max_steps`` ran; otherwise a warning on stderr and the reason.

    Training lengths are steps, so a run that stopped on its wall-clock cap is not the configured run:
    callers store the returned dict in their metrics and reports show it.
    """
    if step >= max_steps:
        return {"stopped_early": None}
    reason = (f"{stage}: wall-clock cap of {max_minutes} min reached after {step} of {max_steps} steps; "
              "this model is NOT the configured run (raise --max-minutes or drop it to train all steps)")
    print(f"WARNING: {reason}", file=sys.stderr, flush=True)
    return {"stopped_early": reason}
