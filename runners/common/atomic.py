"""Crash-safe file plumbing shared by every saver (train checkpoints, SFT and reward-model dirs).

The recipe is the one databases use: write every file of a new version into a fresh
directory, ``fsync`` each file and the directory, switch to it with ONE atomic rename, and
``fsync`` the parent so the rename itself is durable. A manifest (``manifest.json``: size and
SHA-256 of every other file), written last, tells a complete directory from a partial one,
so start-up recovery can keep complete copies and delete the rest, and a corrupt file is
reported by name.

Directories and files get normal permissions (0777/0666 minus the umask, i.e. 0755/0644
under the usual umask), unlike ``tempfile.mkdtemp`` (0700).

Kill injection (tests): ``RLHF_GYM_CRASH_AT="<point>:<n>"`` makes the process ``os._exit(77)``
the n-th time it passes :func:`crash_point` ``<point>`` (n defaults to 1).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
CRASH_ENV = "RLHF_GYM_CRASH_AT"
CRASH_EXIT_CODE = 77
_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Test hook: exit abruptly (no cleanup, like ``kill -9``) at the configured point."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == int(nth or 1):
        os._exit(CRASH_EXIT_CODE)


def fsync_file(path: str | os.PathLike) -> None:
    """Make the file's contents durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the directory's entries (creations, renames) durable; no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file under ``path``, then every directory (deepest first)."""
    dirs = []
    for root, _, files in os.walk(path):
        dirs.append(root)
        for f in files:
            fsync_file(os.path.join(root, f))
    for d in reversed(dirs):
        fsync_dir(d)


def new_temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh hidden directory ``parent/.<prefix>.tmp-<random>`` with normal permissions."""
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f".{prefix}.tmp-{uuid.uuid4().hex[:12]}"
    os.mkdir(path, 0o777)  # the umask applies: 0755 usually
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_permissions(directory: Path) -> None:
    """0666/0777 minus the umask for everything under ``directory`` (some writers, e.g. safetensors, use 0600)."""
    mask = _umask()
    os.chmod(directory, 0o777 & ~mask)
    for p in directory.rglob("*"):
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def write_manifest(directory: Path) -> None:
    """Record size and SHA-256 of every file in ``directory`` (recursively), then fsync all of it."""
    normal_permissions(directory)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (directory / MANIFEST).write_text(json.dumps({"files": entries}, indent=1))
    os.chmod(directory / MANIFEST, 0o666 & ~_umask())
    fsync_tree(directory)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or altered; the message names it."""


def verify_manifest(directory: Path, hint: str = "", skip: frozenset[str] = frozenset(),
                    only: frozenset[str] | None = None) -> dict[str, Any]:
    """Check every file listed in ``directory/manifest.json`` (except ``skip``; only those in ``only`` if given);
    raise naming the first bad file."""
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())["files"]
    except FileNotFoundError:
        raise CorruptCheckpointError(f"{manifest_path} is missing: {directory} is incomplete. {hint}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptCheckpointError(f"{manifest_path} is unreadable ({e}). {hint}") from None
    for name, meta in manifest.items():
        if name in skip or (only is not None and name not in only):
            continue
        path = directory / name
        if not path.is_file():
            raise CorruptCheckpointError(f"{path} is missing. {hint}")
        size = path.stat().st_size
        if size != meta["size"]:
            raise CorruptCheckpointError(
                f"{path} is truncated or altered ({size} bytes, expected {meta['size']}). {hint}")
        if _sha256(path) != meta["sha256"]:
            raise CorruptCheckpointError(f"{path} is corrupt (SHA-256 differs from {manifest_path}). {hint}")
    return manifest


def remove_tree(path: Path) -> None:
    """Delete ``path`` crash-safely: rename it to a hidden trash name first, then delete."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    trash = path.with_name(f".{path.name.lstrip('.')}.trash-{uuid.uuid4().hex[:8]}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def check_writable(directory: str | os.PathLike, what: str = "output") -> Path:
    """Fail early (before any training) when ``directory`` cannot be created or written."""
    path = Path(directory).expanduser()
    probe_dir = path if path.is_dir() else path.parent
    try:
        probe_dir.mkdir(parents=True, exist_ok=True)
        probe = probe_dir / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PermissionError(
            f"cannot write the {what} directory {path} ({e.strerror or e}); pick a writable --output-dir / --log-dir"
        ) from None
    return path
