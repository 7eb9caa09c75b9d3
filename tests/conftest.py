"""Shared pytest fixtures: the local IMDB copy and a tiny offline GPT-2 built per session.

- ``imdb_dir``: directory of the local IMDB copy (tests needing it skip when it is absent).
- ``tiny_tokenizer``: byte-level BPE, vocab 8192, trained on 2,000 train+unsup reviews.
- ``tiny_lm_dir``: a randomly initialised 2-layer / 4-head / 128-dim GPT-2 plus that
  tokenizer, saved in Hugging Face format (``AutoModelForCausalLM.from_pretrained`` loads it).
- ``tiny_lm``: the same model as an object (shared: copy it before training it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from envs.imdb import default_imdb_dir, load_imdb
from runners.common.pretrained import save_pretrained_atomic
from runners.common.tiny_lm import make_tiny_lm, train_tokenizer

TINY_VOCAB = 8192
TINY_LM_KW = {"n_layer": 2, "n_head": 4, "n_embd": 128, "n_positions": 256}


@pytest.fixture(scope="session")
def imdb_dir() -> Path:
    directory = default_imdb_dir()
    if not (directory / "train.jsonl.gz").is_file():
        pytest.skip(f"IMDB data not found at {directory} (set RLHF_IMDB_DIR to a dir holding train.jsonl.gz)")
    return directory


@pytest.fixture(scope="session")
def tiny_tokenizer(imdb_dir: Path):
    texts = [row["text"] for row in load_imdb("train", source=imdb_dir, limit=1000, seed=0)]
    if (imdb_dir / "unsup.jsonl.gz").is_file():
        texts += [row["text"] for row in load_imdb("unsup", source=imdb_dir, limit=1000, seed=0)]
    return train_tokenizer(texts, vocab_size=TINY_VOCAB)


@pytest.fixture(scope="session")
def tiny_lm(tiny_tokenizer):
    return make_tiny_lm(tiny_tokenizer, seed=0, **TINY_LM_KW).eval()


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory, tiny_lm, tiny_tokenizer) -> Path:
    return save_pretrained_atomic(tiny_lm, tiny_tokenizer, tmp_path_factory.mktemp("tiny_lm") / "model")


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is fastest and immune to other jobs on the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
