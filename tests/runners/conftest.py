"""Fixtures of the runner tests: a small IMDB review file for the SFT stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envs.imdb import load_imdb


@pytest.fixture(scope="module")
def review_file(tmp_path_factory: pytest.TempPathFactory, imdb_dir: Path) -> Path:
    """300 IMDB training reviews as a JSON-lines file (one ``--data`` file: the held-out reviews are cut from it)."""
    path = tmp_path_factory.mktemp("reviews") / "reviews.jsonl"
    rows = load_imdb("train", source=imdb_dir, limit=300, seed=0)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
