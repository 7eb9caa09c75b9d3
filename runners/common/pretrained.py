"""Crash-safe Hugging Face model directories: :func:`save_pretrained_atomic` writes one so that a crash never
leaves a half-written directory behind, :func:`recover_pretrained_dir` finishes or undoes an interrupted save at
the next start-up. Used by the SFT and reward-model stages and by the policy export; the file plumbing (temporary
directory, manifest, fsync, crash points) is :mod:`runners.common.atomic`'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from runners.common.atomic import (
    MANIFEST,
    crash_point,
    fsync_dir,
    new_temp_dir,
    remove_tree,
    write_manifest,
)


def save_pretrained_atomic(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    path: str | os.PathLike,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Save ``model`` (safetensors) and ``tokenizer`` to ``path`` all at once, crash-safely.

    Everything is written to a hidden temporary directory next to ``path`` (``extra(tmp_dir)``
    may add files such as a training state), fsynced with a manifest (``manifest.json``), then
    renamed into place; an existing directory is first renamed aside and deleted afterwards.
    A crash at any instant leaves a complete copy (at worst under its hidden name), which
    :func:`recover_pretrained_dir` puts back at the next start-up.
    """
    target = Path(path).expanduser().resolve()
    tmp = new_temp_dir(target.parent, target.name)
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
        crash_point("hf_files_written")
        write_manifest(tmp)
        crash_point("hf_synced")
    except BaseException:
        remove_tree(tmp)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.urandom(4).hex()}")
        os.replace(target, old)
        fsync_dir(target.parent)
        crash_point("hf_moved_aside")
    os.replace(tmp, target)
    fsync_dir(target.parent)
    crash_point("hf_renamed")
    if old is not None:
        remove_tree(old)
    crash_point("hf_cleaned")
    return target


def recover_pretrained_dir(path: str | os.PathLike) -> Path:
    """Start-up recovery after an interrupted :func:`save_pretrained_atomic` of ``path``.

    A complete temporary copy is the newest version and wins; else, if ``path`` is missing, the
    copy that was renamed aside comes back. Every other leftover is deleted. Call it only from
    the process that writes ``path``.
    """
    target = Path(path).expanduser().resolve()
    parent = target.parent
    if not parent.is_dir():
        return target
    leftovers = [p for p in parent.iterdir() if p.name.startswith(f".{target.name}.")
                 and p.name.split(".")[2].split("-")[0] in ("tmp", "old", "trash")]
    complete = sorted((p for p in leftovers if ".tmp-" in p.name and (p / MANIFEST).is_file()),
                      key=lambda p: p.stat().st_mtime)
    olds = [p for p in leftovers if ".old-" in p.name and ".trash-" not in p.name]
    if complete:
        if target.exists():
            remove_tree(target)
        os.replace(complete[-1], target)
    elif not target.exists() and olds:
        old = olds[-1] / "d" if (olds[-1] / "d").is_dir() else olds[-1]  # "/d": the pre-manifest layout
        os.replace(old, target)
    for p in leftovers:
        if p.exists():
            remove_tree(p)
    fsync_dir(parent)
    return target
