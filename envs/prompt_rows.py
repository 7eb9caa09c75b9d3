"""Whole prompts from a dataset for ``TextGen-v0``: rows, the prompt column, chat templates, the token table.

- :func:`load_rows`: the env's ``dataset`` argument (a sequence of dicts or strings, a ``datasets.Dataset``, or a
  ``.jsonl``/``.jsonl.gz`` file) as a list of dicts.
- :func:`render_prompts`: each row's ``prompt_field`` as the text the model continues: a string as it is (or as
  one user message through the chat template with ``chat_template=True``), a list of chat messages
  (``{"role": ..., "content": ...}``) through the tokenizer's chat template with ``add_generation_prompt=True``.
- :func:`whole_prompt_table`: every prompt's tokens (M, P) right padded and their counts (M,), prompts longer
  than an optional cap dropped, one clear error when none fits or a prompt is empty.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

RowsArg = str | os.PathLike | Sequence[dict] | Sequence[str]


def load_rows(dataset: Any, prompt_field: str) -> list[dict[str, Any]]:
    """The dataset's rows as dicts (strings become ``{prompt_field: s}``); every row must hold ``prompt_field``."""
    if dataset is None:
        raise ValueError("TextGen-v0 needs dataset=: a list of dicts (or strings), a datasets.Dataset or a .jsonl "
                         "file whose prompt_field column holds the prompts.")
    if isinstance(dataset, (str, os.PathLike)):
        path = Path(dataset)
        if not path.is_file():
            raise FileNotFoundError(f"dataset {os.fspath(dataset)!r} is not a file; pass a .jsonl[.gz] file or rows.")
        opener: Any = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            dataset = [json.loads(line) for line in f if line.strip()]
    rows = [{prompt_field: r} if isinstance(r, str) else r for r in dataset]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"dataset row {i} is a {type(row).__name__}; rows must be dicts or strings.")
        if prompt_field not in row:
            raise ValueError(f"dataset row {i} has no {prompt_field!r} field; its fields are {sorted(row)}. "
                             "Pass prompt_field=<the column holding the prompt>.")
    if not rows:
        raise ValueError("the dataset has no rows; pass at least one prompt.")
    return [dict(r) for r in rows]


def _is_messages(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(m, dict) and "role" in m for m in value)


def render_prompts(rows: list[dict[str, Any]], prompt_field: str, tokenizer: PreTrainedTokenizerBase,
                   chat_template: bool = False) -> list[str]:
    """The text of every row's prompt (chat messages rendered with the template and the generation prompt)."""
    out = []
    for i, row in enumerate(rows):
        value = row[prompt_field]
        if isinstance(value, str) and chat_template:
            value = [{"role": "user", "content": value}]
        if isinstance(value, str):
            out.append(value)
        elif _is_messages(value):
            if getattr(tokenizer, "chat_template", None) is None:
                raise ValueError(f"dataset row {i} holds chat messages but the tokenizer has no chat template; set "
                                 "tokenizer.chat_template (a Jinja string) or pass plain string prompts.")
            out.append(str(tokenizer.apply_chat_template(list(value), tokenize=False, add_generation_prompt=True)))
        else:
            raise TypeError(f"dataset row {i}: {prompt_field!r} must be a string or a list of chat messages "
                            f"({{'role': ..., 'content': ...}}), got {type(value).__name__}.")
    return out


def whole_prompt_table(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, max_prompt_len: int | None, room: int | None,
    add_bos: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens of every prompt (M, P) int64 right padded with pad, their counts (M,) and the kept rows (M,).

    Prompts longer than ``max_prompt_len`` (None: no cap) are dropped; ``room`` (the model context minus the
    response length, None: unknown) bounds what fits, with a clear error when a kept prompt does not. With
    ``add_bos`` every prompt starts with BOS once (a chat template that writes BOS itself gets no second one).
    """
    ids: list[list[int]] = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if add_bos:
        bos = int(tokenizer.bos_token_id)
        ids = [row if row[:1] == [bos] else [bos, *row] for row in ids]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    if (lengths == 0).any():
        raise ValueError(f"dataset row {int(np.flatnonzero(lengths == 0)[0])} has an empty prompt (0 tokens); "
                         "every prompt needs at least one token.")
    keep = np.ones(len(ids), bool) if max_prompt_len is None else lengths <= max_prompt_len
    if not keep.any():
        raise ValueError(f"no prompt has at most max_prompt_len={max_prompt_len} tokens (the shortest has "
                         f"{int(lengths.min())}); raise max_prompt_len.")
    longest = int(lengths[keep].max())
    if room is not None and longest > room:
        row = int(np.flatnonzero(keep & (lengths == longest))[0])
        raise ValueError(f"dataset row {row} has a {longest}-token prompt, but the model context leaves room for "
                         f"{room} prompt tokens beside max_new_tokens; pass max_prompt_len=<at most {room}> to drop "
                         "longer prompts, or lower max_new_tokens.")
    kept = np.flatnonzero(keep)
    table = np.full((kept.size, longest), tokenizer.pad_token_id, dtype=np.int64)
    for j, i in enumerate(kept):
        table[j, : lengths[i]] = ids[i]
    return table, lengths[kept], kept
