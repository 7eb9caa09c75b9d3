"""Preference pairs for reward-model training: ``{"prompt", "chosen", "rejected"}`` dicts read from a JSON-lines
file (:func:`load_preference_pairs`) or built from labelled IMDB reviews, a positive review preferred over a negative
one (:func:`build_imdb_pairs`)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from envs.imdb import iter_jsonl


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

    def draw(texts: list[str]) -> Iterator[str]:
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
