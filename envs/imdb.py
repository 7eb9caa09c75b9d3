"""The one loader for the IMDB Large Movie Review Dataset (Maas et al., 2011).

Every component (SFT, reward-model training, the TextGen environment's prompts) reads
IMDB through :func:`load_imdb`, which accepts

- ``source=None``: the local copy in :func:`default_imdb_dir` (``$RLHF_IMDB_DIR`` or
  ``<repo>/../shared/data/imdb``), falling back to the Hugging Face hub dataset
  ``stanfordnlp/imdb`` (needs the optional ``datasets`` package and network access);
- a directory holding ``{split}.jsonl.gz`` or ``{split}.jsonl``;
- a ``.jsonl`` / ``.jsonl.gz`` file of JSON objects with a ``"text"`` field
  (``"label"``, 0 = negative / 1 = positive, is optional);
- a hub dataset id such as ``"stanfordnlp/imdb"``.

Rows come back as ``{"text": str, "label": int}`` (``label`` only when present) with
``<br />`` tags and runs of whitespace collapsed by :func:`clean_review`. Parsed files are
cached per process, so several components reading ``train.jsonl.gz`` parse it once.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

HUB_ID = "stanfordnlp/imdb"
ENV_VAR = "RLHF_IMDB_DIR"
SPLITS = ("train", "test", "unsup")
_HUB_SPLIT = {"train": "train", "test": "test", "unsup": "unsupervised", "unsupervised": "unsupervised"}
_SUFFIXES = (".jsonl.gz", ".jsonl")
_BR = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
_WS = re.compile(r"\s+")

OFFLINE_HINT = (
    "To run offline, pass a local JSON-lines file (source='path/to/train.jsonl.gz' or "
    f"'.jsonl', one {{\"text\": ..., \"label\": 0|1}} object per line) or a directory holding "
    f"{{split}}.jsonl.gz, or set {ENV_VAR}=/path/to/imdb."
)


def default_imdb_dir() -> Path:
    """Directory of the local IMDB copy: ``$RLHF_IMDB_DIR``, else ``<repo>/../shared/data/imdb``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    beside_repo = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb"
    if beside_repo.is_dir():
        return beside_repo
    return Path("..") / "shared" / "data" / "imdb"


def clean_review(text: str) -> str:
    """Replace ``<br />`` tags (any spelling) by spaces and collapse whitespace to single spaces."""
    if not isinstance(text, str):
        raise TypeError(f"clean_review expects a str, got {type(text).__name__}")
    return _WS.sub(" ", _BR.sub(" ", text)).strip()


def _split_file(directory: Path, split: str) -> Path:
    for suffix in _SUFFIXES:
        candidate = directory / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no {split!r} split in {directory}: expected {split}.jsonl.gz or {split}.jsonl. {OFFLINE_HINT}"
    )


def _normalise_row(obj: object, where: str, text_field: str = "text") -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
    if text_field not in obj:
        raise ValueError(f'{where}: row has no "{text_field}" field; its fields are {sorted(obj)}. Pass '
                         "text_field=<the field holding the text> (CLI: --text-field)")
    text = obj[text_field]
    if not isinstance(text, str):
        raise ValueError(f"{where}: {text_field!r} must be a string, got {type(text).__name__}")
    row: dict = {"text": clean_review(text)}
    label = obj.get("label")
    if label is not None and label != -1:  # the hub marks unlabeled reviews with -1
        row["label"] = int(label)
    return row


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, object]]:
    """Parsed objects of a .jsonl / .jsonl.gz file with their ``"path:line"`` location, blank lines skipped.

    Raises ValueError naming the line for invalid JSON, and for files that are not UTF-8 text or gzip.
    """
    path = str(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(
                        f"{path}:{lineno} is not valid JSON ({e.msg}); expected JSON lines, one object per line"
                    ) from None
                yield f"{path}:{lineno}", obj
    except (gzip.BadGzipFile, UnicodeDecodeError, EOFError) as e:
        raise ValueError(f"{path} is not readable UTF-8 JSON lines ({e}); use .jsonl or .jsonl.gz") from None


@functools.lru_cache(maxsize=8)
def _read_jsonl_cached(path: str, mtime_ns: int, size: int, text_field: str = "text") -> tuple[dict, ...]:
    """Parse a JSON-lines file once per (path, mtime, size); the key changes when the file does."""
    rows = [_normalise_row(obj, where, text_field) for where, obj in iter_jsonl(path)]
    if not rows:
        raise ValueError(f"{path} holds no rows; it must contain at least one JSON object with a \"text\" field")
    return tuple(rows)


def _read_jsonl(path: Path, text_field: str = "text") -> tuple[dict, ...]:
    if not path.is_file():
        raise FileNotFoundError(f"IMDB file not found: {path}. {OFFLINE_HINT}")
    if not path.name.endswith(_SUFFIXES):
        raise ValueError(f"{path} is not a JSON-lines file: the name must end in .jsonl or .jsonl.gz")
    stat = path.stat()
    return _read_jsonl_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, text_field)


@functools.lru_cache(maxsize=4)
def _load_hub(hub_id: str, split: str, text_field: str = "text") -> tuple[dict, ...]:
    try:
        import datasets  # optional dependency: pip install 'rlhf-gym[hub]'
    except ImportError:
        raise FileNotFoundError(
            f"cannot load {hub_id!r} from the hub: the 'datasets' package is not installed "
            f"(pip install datasets). {OFFLINE_HINT}"
        ) from None
    try:
        ds = datasets.load_dataset(hub_id, split=_HUB_SPLIT.get(split, split))
    except Exception as e:  # network errors, unknown ids and splits all surface differently
        raise FileNotFoundError(f"cannot load {hub_id!r} split {split!r} from the hub ({e}). {OFFLINE_HINT}") from e
    if text_field not in ds.column_names:
        raise ValueError(f"hub dataset {hub_id!r} has no {text_field!r} column; its columns are {ds.column_names}. "
                         "Pass text_field=<the column holding the text> (CLI: --text-field)")
    rows = tuple(_normalise_row(obj, f"{hub_id}[{split}]", text_field) for obj in ds)
    if not rows:
        raise ValueError(f"hub dataset {hub_id!r} split {split!r} is empty")
    return rows


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.endswith(_SUFFIXES)


def _resolve(split: str, source: str | os.PathLike | None, text_field: str = "text") -> tuple[dict, ...]:
    if source is None:
        directory = default_imdb_dir()
        if directory.is_dir():
            return _read_jsonl(_split_file(directory, split), text_field)
        try:
            return _load_hub(HUB_ID, split, text_field)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"no local IMDB copy at {directory} and the hub fallback failed: {e}") from None
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_jsonl(_split_file(path, split), text_field)
    if path.exists() or isinstance(source, os.PathLike) or _looks_like_path(str(source)):
        return _read_jsonl(path, text_field)
    return _load_hub(str(source), split, text_field)


def load_imdb(
    split: str = "train",
    source: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int | None = None,
    text_field: str = "text",
) -> list[dict]:
    """Load IMDB reviews as a list of ``{"text", "label"?}`` dicts (fresh copies, safe to mutate).

    ``text_field`` names the field (hub: column) holding the text; rows always come back under ``"text"``.

    ``split`` picks ``{split}.jsonl[.gz]`` from a directory or the hub split (ignored when
    ``source`` is a file). The local files are sorted by label, so pass ``seed`` to shuffle
    deterministically before ``limit`` takes the first rows; ``seed=None`` keeps file order.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    rows = _resolve(split, source, text_field)
    order = list(range(len(rows)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    if limit is not None:
        order = order[:limit]
    return [dict(rows[i]) for i in order]


def iter_texts(
    splits: str | tuple[str, ...] = ("train", "unsup"),
    source: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield cleaned review texts of one or more splits; ``limit``/``seed`` apply per split.

    A file ``source`` has no splits, so it is read once whatever ``splits`` says.
    """
    names = (splits,) if isinstance(splits, str) else tuple(splits)
    if source is not None and Path(source).expanduser().is_file():
        names = names[:1]
    for split in names:
        for row in load_imdb(split, source=source, limit=limit, seed=seed):
            yield row["text"]


def clear_cache() -> None:
    """Forget parsed files (e.g. after tests rewrite a file in place within one mtime tick)."""
    _read_jsonl_cached.cache_clear()
    _load_hub.cache_clear()
