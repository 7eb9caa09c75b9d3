"""Fixtures of the text env tests: IMDB prompts and the keyword arguments of a tiny TextGen env."""

from __future__ import annotations

import pytest
from env_helpers import letter_score

from envs.imdb import load_imdb


@pytest.fixture(scope="module")
def texts(imdb_dir) -> list[str]:
    return [row["text"] for row in load_imdb("train", source=imdb_dir, limit=300, seed=1)]


@pytest.fixture
def kw(tiny_lm, tiny_tokenizer, texts) -> dict:
    return {"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": letter_score, "dataset": texts,
            "device": "cpu", "kl_coef": 0.3}
