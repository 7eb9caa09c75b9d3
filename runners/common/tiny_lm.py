"""Tiny offline language-model building blocks (no hub download needed).

Used by the tests, the benchmarks, the TextGen environment and the SFT / reward-model
runners' ``--preset tiny``:

- :func:`train_tokenizer`: a byte-level BPE tokenizer trained with the ``tokenizers``
  library, wrapped as a ``transformers`` fast tokenizer. ``<|endoftext|>`` is eos, bos and
  unk (as in GPT-2); ``<|pad|>`` is a *separate* pad token, so padding never hides an eos,
  and padding is on the left, as batched generation expects.
- :func:`tiny_gpt2_config` / :func:`make_tiny_lm`: a small, seeded GPT-2.
- :func:`save_pretrained_atomic`: write a Hugging Face model directory so that a crash
  never leaves a half-written one behind.
- :func:`resolve_device`, :func:`cli_with_presets`, :class:`BudgetBar` and :func:`stop_report`: shared by the
  SFT and reward runners.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import torch
import tyro
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from envs.lm import resolve_device  # noqa: F401  (re-exported for the SFT and reward runners)
from runners.common.atomic import (
    MANIFEST,
    crash_point,
    fsync_dir,
    new_temp_dir,
    remove_tree,
    write_manifest,
)
from runners.common.cli import plain, prog

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
T = TypeVar("T")


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8192,
    min_frequency: int = 2,
    model_max_length: int = 1024,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` (eos/bos/unk ``<|endoftext|>``, pad ``<|pad|>``).

    The vocabulary holds the two special tokens, the 256 byte symbols and up to
    ``vocab_size - 258`` merges; fewer when the corpus has too few pairs seen
    ``min_frequency`` times, so check ``len(tokenizer)``.
    """
    if vocab_size < 258 + 1:
        raise ValueError(f"vocab_size must exceed 258 (2 special tokens + 256 bytes), got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    n_texts = 0

    def counted() -> Iterable[str]:
        nonlocal n_texts
        for text in texts:
            n_texts += 1
            yield text

    backend.train_from_iterator(counted(), trainer=trainer)
    if n_texts == 0:
        raise ValueError("train_tokenizer got no texts; pass at least one string")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def tiny_gpt2_config(
    tokenizer: PreTrainedTokenizerBase,
    n_layer: int = 2,
    n_head: int = 4,
    n_embd: int = 128,
    n_positions: int = 256,
    **kwargs,
) -> GPT2Config:
    """A small GPT-2 config whose vocabulary and bos/eos/pad ids match ``tokenizer``."""
    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; train one with train_tokenizer() or set eos_token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=bos_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id,
        **kwargs,
    )


def make_tiny_lm(tokenizer: PreTrainedTokenizerBase, seed: int = 0, **config_kw) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 (see :func:`tiny_gpt2_config`); same seed, same weights.

    The global torch RNG is left untouched.
    """
    config = tiny_gpt2_config(tokenizer, **config_kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    generation_config = model.generation_config
    generation_config.pad_token_id = config.pad_token_id
    generation_config.eos_token_id = config.eos_token_id
    generation_config.bos_token_id = config.bos_token_id
    return model


def save_pretrained_atomic(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    path: str | os.PathLike,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Save ``model`` (safetensors) and ``tokenizer`` to ``path`` all at once, crash-safely.

    Everything is written to a hidden temporary directory next to ``path`` (``extra(tmp_dir)``
    may add files such as a training state), fsynced with a manifest (``manifest.json``), then
    renamed into place; an existing directory is first renamed aside and deleted afterwards.
    A crash at any instant leaves a complete copy (at worst under its hidden name), which
    :func:`recover_pretrained_dir` puts back at the next start-up.
    """
    target = Path(path).expanduser().resolve()
    tmp = new_temp_dir(target.parent, target.name)
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
        crash_point("hf_files_written")
        write_manifest(tmp)
        crash_point("hf_synced")
    except BaseException:
        remove_tree(tmp)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.urandom(4).hex()}")
        os.replace(target, old)
        fsync_dir(target.parent)
        crash_point("hf_moved_aside")
    os.replace(tmp, target)
    fsync_dir(target.parent)
    crash_point("hf_renamed")
    if old is not None:
        remove_tree(old)
    crash_point("hf_cleaned")
    return target


def recover_pretrained_dir(path: str | os.PathLike) -> Path:
    """Start-up recovery after an interrupted :func:`save_pretrained_atomic` of ``path``.

    A complete temporary copy is the newest version and wins; else, if ``path`` is missing, the
    copy that was renamed aside comes back. Every other leftover is deleted. Call it only from
    the process that writes ``path``.
    """
    target = Path(path).expanduser().resolve()
    parent = target.parent
    if not parent.is_dir():
        return target
    leftovers = [p for p in parent.iterdir() if p.name.startswith(f".{target.name}.")
                 and p.name.split(".")[2].split("-")[0] in ("tmp", "old", "trash")]
    complete = sorted((p for p in leftovers if ".tmp-" in p.name and (p / MANIFEST).is_file()),
                      key=lambda p: p.stat().st_mtime)
    olds = [p for p in leftovers if ".old-" in p.name and ".trash-" not in p.name]
    if complete:
        if target.exists():
            remove_tree(target)
        os.replace(complete[-1], target)
    elif not target.exists() and olds:
        old = olds[-1] / "d" if (olds[-1] / "d").is_dir() else olds[-1]  # "/d": the pre-manifest layout
        os.replace(old, target)
    for p in leftovers:
        if p.exists():
            remove_tree(p)
    fsync_dir(parent)
    return target


def cli_with_presets(cls: type[T], presets: dict[str, T], argv: list[str] | None = None,
                     description: str | None = None, module: str | None = None) -> T:
    """Parse a config dataclass with tyro, using ``presets[--preset]`` as the defaults.

    ``--preset tiny --max-minutes 5`` therefore means "the tiny preset, but 5 minutes", and
    ``--preset tiny --help`` shows the preset's defaults.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    name = None
    for i, arg in enumerate(args):
        if arg == "--preset" and i + 1 < len(args):
            name = args[i + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
    default = presets.get(name, cls()) if name is not None else cls()

    return tyro.cli(cls, args=args, default=default, description=plain(description),
                    prog=prog(module) if module else None)


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
