"""runners.common.preferences: IMDB preference pairs (seeded, balanced in length) and preference files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runners.common.preferences import build_imdb_pairs, load_preference_pairs

ROWS = [{"text": f"pos{i} " + "good " * 30, "label": 1} for i in range(20)] + \
       [{"text": f"neg{i} " + "bad " * 30, "label": 0} for i in range(30)]


def test_build_imdb_pairs_prefers_positive_and_is_seeded() -> None:
    pairs = build_imdb_pairs(ROWS, 20, seed=0)
    assert all(p["chosen"].startswith("pos") and p["rejected"].startswith("neg") for p in pairs)
    assert len({p["chosen"] for p in pairs}) == 20  # no positive reused before all are used
    assert len({p["rejected"] for p in pairs}) == 20
    assert pairs == build_imdb_pairs(ROWS, 20, seed=0)
    assert pairs != build_imdb_pairs(ROWS, 20, seed=1)
    assert all(p["prompt"] == "" for p in pairs)


def test_build_imdb_pairs_prefixes_are_balanced_in_length() -> None:
    pairs = build_imdb_pairs(ROWS, 400, seed=0, prefix_words=(5, 15))
    lengths_c = [len(p["chosen"].split()) for p in pairs]
    lengths_r = [len(p["rejected"].split()) for p in pairs]
    assert min(lengths_c + lengths_r) == 5 and max(lengths_c + lengths_r) == 15
    assert abs(sum(lengths_c) / 400 - sum(lengths_r) / 400) < 1.0  # length is no preference cue
    short = build_imdb_pairs(ROWS, 5, seed=0, max_chars=12)
    assert all(len(p["chosen"]) <= 12 and not p["chosen"].endswith(" ") for p in short)


def test_build_imdb_pairs_errors() -> None:
    with pytest.raises(ValueError, match="label"):
        build_imdb_pairs([{"text": "x"}], 1)
    with pytest.raises(ValueError, match="both classes"):
        build_imdb_pairs(ROWS[:20], 1)
    with pytest.raises(ValueError, match="n_pairs"):
        build_imdb_pairs(ROWS, 0)
    with pytest.raises(ValueError, match="prefix_words"):
        build_imdb_pairs(ROWS, 1, prefix_words=(10, 5))


def test_load_preference_pairs(tmp_path: Path) -> None:
    good = tmp_path / "p.jsonl"
    good.write_text(json.dumps({"prompt": "Q: ", "chosen": "yes", "rejected": "no"}) + "\n"
                    + json.dumps({"chosen": "a", "rejected": "b"}) + "\n")
    assert load_preference_pairs(good) == [{"prompt": "Q: ", "chosen": "yes", "rejected": "no"},
                                           {"prompt": "", "chosen": "a", "rejected": "b"}]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"chosen": "a"}) + "\n")
    with pytest.raises(ValueError, match='"rejected"'):
        load_preference_pairs(tmp_path / "bad.jsonl")
    (tmp_path / "junk.jsonl").write_text("{oops\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_preference_pairs(tmp_path / "junk.jsonl")
    with pytest.raises(FileNotFoundError):
        load_preference_pairs(tmp_path / "missing.jsonl")
