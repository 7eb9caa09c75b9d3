"""Prompts for TextGen-IMDB-v0: review texts from a file, a hub id or a sequence, and their first tokens.

:func:`load_texts` turns the env's ``dataset`` argument into a list of strings; :func:`tokenize_prompts`
cuts each into its first ``max_len`` tokens (the env then draws a prompt length per episode).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from itertools import islice

import numpy as np
from transformers import PreTrainedTokenizerBase

from envs.imdb import load_imdb

_WORD = re.compile(r"\S+")
_PROBE = 32  # texts on which head-of-text tokenization is checked against full tokenization

DatasetArg = str | os.PathLike | Sequence[str] | Sequence[dict] | None


def _head_words(text: str, n_words: int) -> str:
    """The text up to the end of its ``n_words``-th whitespace-separated word (whole words only)."""
    end = 0
    for match in islice(_WORD.finditer(text), n_words):
        end = match.end()
    return text[:end]


def adds_bos(tokenizer: PreTrainedTokenizerBase, add_bos: bool | None = None) -> bool:
    """Whether prompts start with BOS: ``add_bos`` when given, else the tokenizer's default (it puts BOS first
    when encoding with special tokens, as Llama's, Gemma's, Mistral's and Phi-3's do and GPT-2's does not)."""
    if add_bos is not None and not isinstance(add_bos, bool):
        raise ValueError(f"add_bos must be None (the tokenizer's default), True or False, got {add_bos!r}.")
    bos = tokenizer.bos_token_id
    if add_bos and bos is None:
        raise ValueError("add_bos=True but the tokenizer has no BOS token; set tokenizer.bos_token or add_bos=False.")
    if add_bos is not None or bos is None:
        return bool(add_bos)
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bool(with_special) and with_special[0] == bos and (not plain or plain[0] != bos)


def tokenize_prompts(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_len: int, add_bos: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """First ``max_len`` tokens of every text: ids (M, max_len) right-padded with pad, and lengths (M,).

    With ``add_bos`` every prompt starts with BOS (counted in its length), once: a text whose tokens already
    start with BOS (e.g. rendered by a chat template) gets no second one.

    Only the first ``max_len + 1`` whole words are tokenized (every word is at least one token, and a cut between
    words leaves the tokens before it unchanged for word-level pre-tokenizers such as GPT-2's); a probe on the
    first texts falls back to full tokenization for tokenizers where that does not hold.
    """
    heads = [_head_words(t, max_len + 1) for t in texts]
    encode: Callable[[list[str]], list[list[int]]] = lambda xs: tokenizer(xs, add_special_tokens=False)["input_ids"]
    ids = encode(heads)
    probe = list(range(min(_PROBE, len(texts))))
    full = encode([texts[i] for i in probe])
    if any(full[j][:max_len] != ids[j][:max_len] for j in probe):
        ids = encode(list(texts))
    if add_bos:
        bos = int(tokenizer.bos_token_id)
        ids = [row if row[:1] == [bos] else [bos, *row] for row in ids]
    table = np.full((len(texts), max_len), tokenizer.pad_token_id, dtype=np.int64)
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, row in enumerate(ids):
        row = row[:max_len]
        table[i, : len(row)] = row
        lengths[i] = len(row)
    return table, lengths


def load_texts(dataset: DatasetArg, split: str, text_field: str = "text") -> list[str]:
    """Review texts from a local IMDB file/dir or hub id (via :func:`envs.imdb.load_imdb`, cleaned), a sequence of
    strings, or a sequence of dicts / a ``datasets.Dataset`` whose ``text_field`` column holds the text."""
    if dataset is None or isinstance(dataset, (str, os.PathLike)):
        return [row["text"] for row in load_imdb(split=split, source=dataset, text_field=text_field)]
    columns = getattr(dataset, "column_names", None)  # datasets.Dataset
    if columns is not None and text_field not in columns:
        raise ValueError(f"the dataset has no {text_field!r} column; its columns are {list(columns)}. "
                         "Pass text_field=<the column holding the text> (CLI: --text-field).")
    texts = []
    for i, row in enumerate(dataset):
        if isinstance(row, dict):
            if text_field not in row:
                raise ValueError(f"dataset row {i} has no {text_field!r} field; its fields are {sorted(row)}. "
                                 "Pass text_field=<the field holding the text> (CLI: --text-field).")
            row = row[text_field]
        texts.append(row)
    strings = [t for t in texts if isinstance(t, str)]
    if len(strings) != len(texts):
        raise TypeError("dataset must be a path, an HF dataset id, a datasets.Dataset, or a sequence of strings / "
                        f"{{{text_field!r}: str}} dicts.")
    return strings
