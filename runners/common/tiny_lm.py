"""Tiny offline language models (no hub download needed): a tokenizer trained on the spot and a small, seeded GPT-2.

Used by the SFT and reward-model stages when they train from scratch (``--preset tiny`` / ``tiny-scratch``), and by
the tests and benchmarks:

- :func:`train_tokenizer`: a byte-level BPE tokenizer trained with the ``tokenizers`` library, wrapped as a
  ``transformers`` fast tokenizer. ``<|endoftext|>`` is eos, bos and unk (as in GPT-2); ``<|pad|>`` is a *separate*
  pad token, so padding never hides an eos, and padding is on the left, as batched generation expects.
- :func:`tiny_gpt2_config` / :func:`make_tiny_lm`: a small GPT-2 matching that tokenizer; same seed, same weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


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
    **kwargs: Any,
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


def make_tiny_lm(tokenizer: PreTrainedTokenizerBase, seed: int = 0, **config_kw: Any) -> GPT2LMHeadModel:
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
