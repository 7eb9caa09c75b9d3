"""Tests of the IMDB loader: cleaning, sources (dir, .jsonl, .jsonl.gz, env var), limits and errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from envs import imdb
from envs.imdb import clean_review, default_imdb_dir, iter_texts, load_imdb

ROWS = [
    {"id": 1, "text": "Great film.<br /><br />Loved   it.", "label": 1},
    {"id": 2, "text": "Awful.<br/>Boring\tand long.", "label": 0},
    {"id": 3, "text": "Meh <BR> okay.", "label": 1},
]


def _write(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def test_clean_review_removes_br_tags_and_collapses_whitespace() -> None:
    assert clean_review("A<br /><br />B") == "A B"
    assert clean_review("A<br/>B<BR>C< br / >D") == "A B C D"
    assert clean_review("  lots \n\t of   space  ") == "lots of space"
    with pytest.raises(TypeError):
        clean_review(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["rev.jsonl", "rev.jsonl.gz"])
def test_jsonl_and_gz_give_the_same_cleaned_rows(tmp_path: Path, name: str) -> None:
    rows = load_imdb(source=_write(tmp_path / name, ROWS))
    assert rows == [
        {"text": "Great film. Loved it.", "label": 1},
        {"text": "Awful. Boring and long.", "label": 0},
        {"text": "Meh okay.", "label": 1},
    ]


def test_directory_source_picks_the_split_and_label_is_optional(tmp_path: Path) -> None:
    _write(tmp_path / "train.jsonl", ROWS)
    _write(tmp_path / "unsup.jsonl.gz", [{"text": "no label here"}])
    assert len(load_imdb("train", source=tmp_path)) == 3
    assert load_imdb("unsup", source=tmp_path) == [{"text": "no label here"}]
    with pytest.raises(FileNotFoundError, match="test.jsonl.gz"):
        load_imdb("test", source=tmp_path)


def test_limit_seed_and_returned_rows_are_copies(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [{"text": f"review {i}", "label": i % 2} for i in range(50)])
    assert [r["text"] for r in load_imdb(source=path, limit=3)] == ["review 0", "review 1", "review 2"]
    a = load_imdb(source=path, limit=10, seed=1)
    assert a == load_imdb(source=path, limit=10, seed=1)
    assert a != load_imdb(source=path, limit=10, seed=2)
    a[0]["text"] = "mutated"
    assert "mutated" not in {r["text"] for r in load_imdb(source=path)}
    assert load_imdb(source=path, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_imdb(source=path, limit=-1)


def test_cache_notices_a_rewritten_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", ROWS)
    assert len(load_imdb(source=path)) == 3
    _write(path, ROWS[:1] + [{"text": "a much longer replacement row that changes the file size"}])
    imdb.clear_cache()  # mtime may not tick within one test; size does, clear anyway for certainty
    assert len(load_imdb(source=path)) == 2


def test_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="RLHF_IMDB_DIR"):
        load_imdb(source=tmp_path / "missing.jsonl.gz")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not valid JSON"):
        load_imdb(source=tmp_path / "bad.jsonl")
    _write(tmp_path / "notext.jsonl", [{"review": "x"}])
    with pytest.raises(ValueError, match='no "text" field'):
        load_imdb(source=tmp_path / "notext.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="no rows"):
        load_imdb(source=tmp_path / "empty.jsonl")
    (tmp_path / "fake.jsonl.gz").write_text("plain text, not gzip")
    with pytest.raises(ValueError, match="not readable"):
        load_imdb(source=tmp_path / "fake.jsonl.gz")
    (tmp_path / "rows.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match=".jsonl"):
        load_imdb(source=tmp_path / "rows.csv")


def test_unreachable_hub_id_explains_how_to_run_offline() -> None:
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(FileNotFoundError, match="offline"):
            load_imdb(source="someone/no-such-dataset")
    else:
        pytest.skip("the 'datasets' package is installed: a hub lookup would need the network")


def test_env_var_sets_the_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "train.jsonl", ROWS)
    monkeypatch.setenv("RLHF_IMDB_DIR", str(tmp_path))
    assert default_imdb_dir() == tmp_path
    assert len(load_imdb("train")) == 3
    assert list(iter_texts(("train",))) == [r["text"] for r in load_imdb("train")]


def test_iter_texts_reads_a_file_once(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", ROWS)
    assert len(list(iter_texts(("train", "unsup"), source=path))) == 3


def test_local_copy_is_shuffled_with_seed_and_clean(imdb_dir: Path) -> None:
    rows = load_imdb("train", source=imdb_dir, limit=400, seed=0)
    assert len(rows) == 400
    labels = [r["label"] for r in rows]
    assert 150 < sum(labels) < 250  # the file is sorted by label; the seeded shuffle mixes it
    assert not any("<br" in r["text"].lower() for r in rows)
    assert load_imdb("train", source=imdb_dir, limit=1)[0]["label"] == 0  # file order without seed
