"""Crash-safe checkpoints: network weights as safetensors, optimizer state, resume state and JSON.

A run directory holds versioned checkpoints and a pointer to the newest one::

    checkpoint-000040/      a complete checkpoint (the last ``keep`` are kept)
        model.safetensors   the policy/value network (a LoRA policy: its trainable weights only, adapter and
                            value head; the frozen base is rebuilt from --model)
        optimizer.pt        Adam state (for --resume)
        resume.pt           RNG states, env and rollout-collector state (exact resume; optional)
        state.json          {"config": ..., "global_step": ..., "num_updates": ..., "network": ...}
        manifest.json       size + SHA-256 of every file above, written last
    checkpoint -> checkpoint-000040   symlink, replaced atomically

A save writes a hidden temporary directory, fsyncs its files and itself, renames it to
``checkpoint-<update>`` (one atomic rename), fsyncs the run directory, then atomically
replaces the ``checkpoint`` symlink and prunes old versions. A crash at any instant leaves
the previous checkpoint reachable; :func:`recover` (run when training starts or resumes)
deletes leftovers and points ``checkpoint`` at the newest complete version. Loading checks
every file against the manifest and names the file that is missing or corrupt.
"""

from __future__ import annotations

import errno
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_file, save_model

from agents.agent import Agent
from runners.common import checkpoint_schema as schema
from runners.common.atomic import (
    MANIFEST,
    CorruptCheckpointError,
    crash_point,
    fsync_dir,
    new_temp_dir,
    remove_tree,
    verify_manifest,
    write_manifest,
)

POINTER = "checkpoint"  # <run dir>/checkpoint -> checkpoint-<update>/
STATE_FILE = "state.json"
RESUME_FILE = "resume.pt"
_VERSION = re.compile(r"^(?P<name>.+)-(?P<update>\d{6,})$")


def _versions(pointer: Path) -> list[tuple[int, Path]]:
    """Versioned checkpoint dirs ``<pointer>-<update>`` holding a manifest, oldest first."""
    if not pointer.parent.is_dir():
        return []
    out = []
    for p in pointer.parent.iterdir():
        m = _VERSION.match(p.name)
        if m and m["name"] == pointer.name and p.is_dir() and not p.is_symlink() and (p / MANIFEST).is_file():
            out.append((int(m["update"]), p))
    return sorted(out)


def _point(pointer: Path, target: Path) -> None:
    """Atomically make the symlink ``pointer`` refer to ``target`` (a sibling directory)."""
    if pointer.is_dir() and not pointer.is_symlink():  # a pre-versioning checkpoint dir: replace it
        remove_tree(pointer)
    link = pointer.with_name(f".{pointer.name}.link-{uuid.uuid4().hex[:8]}")
    os.symlink(target.name, link)
    os.replace(link, pointer)
    fsync_dir(pointer.parent)


def recover(pointer: str | Path) -> Path | None:
    """Start-up recovery of the checkpoints behind ``pointer`` (e.g. ``run_dir/checkpoint``).

    Deletes temporary/trash leftovers of interrupted saves, and points ``pointer`` at the
    newest complete version. Returns the checkpoint directory to resume from (None: none).
    Only the process that writes the checkpoints may call this (a reader could delete a
    live save's temporary directory).
    """
    pointer = Path(pointer)
    parent = pointer.parent
    if not parent.is_dir():
        return None
    legacy_old = parent / f".{pointer.name}.old"  # written by the pre-versioning saver
    if legacy_old.is_dir() and not pointer.exists() and (legacy_old / STATE_FILE).is_file():
        os.replace(legacy_old, pointer)
    for p in parent.iterdir():
        if p.name.startswith((f".{pointer.name}.tmp-", f".{pointer.name}.link-", f".{pointer.name}.trash-",
                              f".{pointer.name}-")) or p.name == legacy_old.name:
            remove_tree(p)
    versions = _versions(pointer)
    if versions:
        newest = versions[-1][1]
        if not (pointer.is_symlink() and os.readlink(pointer) == newest.name):
            _point(pointer, newest)
        return newest
    if pointer.is_symlink() and not pointer.exists():
        pointer.unlink()
    if pointer.is_dir():
        _check_inside(pointer)
        return pointer
    return None


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory for ``path``: a run dir, its ``checkpoint`` pointer, or a version dir
    (read-only: a dangling pointer falls back to the newest complete version). Inverse: :func:`run_dir_of`."""
    path = Path(path)
    pointer = path / POINTER
    if pointer.exists() or pointer.is_symlink() or _versions(pointer):
        path = pointer
    if path.exists():
        _check_inside(path)
        return path.resolve()
    versions = _versions(path)
    return versions[-1][1] if versions else path


def _check_inside(path: Path) -> None:
    """A ``checkpoint`` symlink must name a sibling version dir: one pointing elsewhere would load another run."""
    if path.is_symlink() and path.resolve().parent != path.parent.resolve():
        raise CorruptCheckpointError(
            f"{path} points outside its run directory (to {path.resolve()}); a run's checkpoint lives inside it. "
            f"Remove the link (rm {path}) to use the run's newest checkpoint-NNNNNN/, or pass that other checkpoint "
            "directory itself.")


def run_dir_of(path: str | Path) -> Path:
    """The run directory for ``path``: a run dir itself, or the directory holding ``path`` when it is the
    run's ``checkpoint`` pointer or a ``checkpoint-NNNNNN`` version dir. Inverse: :func:`checkpoint_dir`."""
    path = Path(path)
    version = _VERSION.match(path.name)
    if path.name == POINTER or (version is not None and version["name"] == POINTER):
        return path.parent
    return path


def _to_safe(obj: Any) -> Any:
    """numpy arrays -> tensors (tagged) so that the file loads with ``weights_only=True``."""
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj)), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_safe(v) for v in obj)
    return obj


def _from_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return obj["__ndarray__"].numpy().astype(obj["dtype"], copy=True)
        return {k: _from_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_from_safe(v) for v in obj)
    return obj


def save_checkpoint(
    path: str | Path,
    agent: Agent,
    config: dict[str, Any],
    global_step: int,
    keep: int = 3,
    resume_state: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Crash-safely write ``agent`` (weights, optimizer, counters), ``config`` and optional
    ``resume_state`` as ``<path>-<update>/`` and point the symlink ``path`` at it; keeps the
    newest ``keep`` versions. Returns the version directory."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    pointer = Path(path)
    parent = pointer.parent
    tmp = new_temp_dir(parent, pointer.name)
    try:
        weights = _save_weights(agent, tmp / "model.safetensors")
        crash_point("ckpt_model_written")
        torch.save(agent.optimizer.state_dict(), tmp / "optimizer.pt")
        if resume_state is not None:
            torch.save(_to_safe(resume_state), tmp / RESUME_FILE)
        state = {"config": config, "global_step": int(global_step), "num_updates": int(agent.num_updates),
                 "network": type(agent.net).__name__, "weights": weights, **extra}
        if agent.scaler.is_enabled():  # float16: the gradient scale and its growth counter resume too
            state["grad_scaler"] = agent.scaler.state_dict() | {"skipped_steps": agent.skipped_steps}
        if agent.reward_moments is not None:  # --agent.reward-norm: the running moments, for an exact resume
            state["reward_moments"] = agent.reward_moments.state_dict()
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, default=str))
        crash_point("ckpt_files_written")
        write_manifest(tmp)  # fsyncs every file and the directory
        crash_point("ckpt_synced")
        final = parent / f"{pointer.name}-{agent.num_updates:06d}"
        if final.exists():
            remove_tree(final)
        os.rename(tmp, final)
    except BaseException as e:
        remove_tree(tmp)
        if _disk_full(e):
            previous = pointer.resolve() if pointer.exists() else None
            kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
            raise OSError(errno.ENOSPC, f"no space left on the device of {parent} while writing a checkpoint "
                          f"({type(e).__name__}: {e}); {kept}. Free some space, then continue with "
                          f"`--resume {parent}`") from None
        raise
    fsync_dir(parent)
    crash_point("ckpt_renamed")
    _point(pointer, final)
    crash_point("ckpt_pointer_switched")
    for _, old in _versions(pointer)[:-keep]:
        if old != final:
            remove_tree(old)
    crash_point("ckpt_pruned")
    return final


def _save_weights(agent: Agent, file: Path) -> str:
    """Write the network's weights: all of them ("all"), or a LoRA policy's trainable ones only ("trainable": the
    adapter and the value head, a small fraction of the model; the frozen base is the run's --model)."""
    if getattr(agent.net, "peft", None) is None:
        save_model(agent.net, str(file))
        return "all"
    save_file({n: p.detach().contiguous() for n, p in agent.net.named_parameters() if p.requires_grad}, str(file))
    return "trainable"


def _load_weights(agent: Agent, file: Path, weights: str) -> None:
    """Load :func:`_save_weights`' file into ``agent.net``; a "trainable" file must hold exactly its trainable
    weights (the frozen base is already in place)."""
    if weights != "trainable":
        load_model(agent.net, str(file), device=str(agent.device))
        return
    trainable = {n for n, p in agent.net.named_parameters() if p.requires_grad}
    missing, unexpected = load_model(agent.net, str(file), strict=False, device=str(agent.device))
    absent = trainable & set(missing)
    if absent or unexpected:
        raise RuntimeError(f"it holds trainable weights of another network (missing {sorted(absent)[:3]}, "
                           f"unexpected {sorted(unexpected)[:3]}): resume with the run's --lora-r and "
                           "--lora-target-modules")


def _disk_full(e: BaseException) -> bool:
    """ENOSPC, directly or as torch's zip writer reports a short write ("unexpected pos ...")."""
    return (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(e, RuntimeError) and "unexpected pos" in str(e))


def _hint(path: Path) -> str:
    older = [str(p) for _, p in _versions(path.parent / _VERSION.sub(r"\g<name>", path.name))[:-1] if p != path]
    fallback = (f"delete {path} to resume from the previous checkpoint ({older[-1]})" if older
                else "restart the run without --resume")
    return f"The checkpoint cannot be used: {fallback}."


def read_state(path: str | Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint (run dir, pointer or version dir), with a clear error if it is not one."""
    path = checkpoint_dir(path)
    state_file = path / STATE_FILE
    if not state_file.is_file() or not (path / "model.safetensors").is_file():
        if (path / MANIFEST).is_file():
            verify_manifest(path, _hint(path))
        if path.is_dir() and any(path.glob("events.out.tfevents.*")):
            raise FileNotFoundError(
                f"run directory {path} holds no checkpoint: the run stopped before its first one "
                "(--checkpoint-every), so there is nothing to resume. Start over: delete it (rm -r "
                f"{path}) and run the same command without --resume, or pick another --run-name.")
        raise FileNotFoundError(
            f"{path} is not a checkpoint directory (expected {STATE_FILE} and model.safetensors; "
            "checkpoints are written by `python -m runners.train` under <run dir>/checkpoint)"
        )
    if (path / MANIFEST).is_file():  # its config rebuilds the run: an altered one would be read as options
        verify_manifest(path, _hint(path), only=frozenset({STATE_FILE}))
    try:
        state = json.loads(state_file.read_text())
    except ValueError as e:
        raise CorruptCheckpointError(f"{state_file} is corrupt ({e}). {_hint(path)}") from None
    problem = schema.state_problem(state)
    if problem:
        raise CorruptCheckpointError(f"{state_file}: {problem}. {_hint(path)}")
    return state


def load_checkpoint(
    path: str | Path, agent: Agent, load_optimizer: bool = True, reset_optimizer: bool = False
) -> dict[str, Any]:
    """Load weights (and optimizer state) into ``agent``; returns the checkpoint state.

    Every file is checked against the manifest first. ``load_optimizer`` with a missing
    ``optimizer.pt`` is an error unless ``reset_optimizer`` (start Adam afresh on purpose).
    """
    path = checkpoint_dir(path)
    state = read_state(path)
    hint = _hint(path)
    opt_file = path / "optimizer.pt"
    use_optimizer = load_optimizer and not reset_optimizer
    if use_optimizer and not opt_file.is_file():
        raise FileNotFoundError(
            f"{opt_file} is missing: resuming would silently restart Adam. Pass --reset-optimizer to "
            f"continue with a fresh optimizer on purpose, or {hint[len('The checkpoint cannot be used: '):]}"
        )
    if (path / MANIFEST).is_file():
        verify_manifest(path, hint, skip=frozenset() if use_optimizer else frozenset({"optimizer.pt"}))
    if state["network"] != type(agent.net).__name__:
        raise ValueError(f"checkpoint holds a {state['network']}, the agent has a {type(agent.net).__name__}")
    try:
        _load_weights(agent, path / "model.safetensors", state.get("weights", "all"))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CorruptCheckpointError(f"{path / 'model.safetensors'} cannot be loaded ({e}). {hint}") from None
    bad = schema.non_finite(agent.net)
    if bad:
        raise CorruptCheckpointError(f"{path / 'model.safetensors'} holds non-finite weights ({bad}). {hint}")
    if use_optimizer:
        try:
            opt_state = torch.load(opt_file, map_location=agent.device, weights_only=True)
            problem = schema.optimizer_problem(opt_state, agent.optimizer)
            if problem:
                raise ValueError(problem)
            agent.optimizer.load_state_dict(opt_state)
        except Exception as e:  # noqa: BLE001  (pickle/zip/shape errors all mean the same to the user)
            raise CorruptCheckpointError(f"{opt_file} cannot be loaded ({type(e).__name__}: {e}). {hint}") from None
    if use_optimizer and agent.scaler.is_enabled() and isinstance(state.get("grad_scaler"), dict):
        scaler = dict(state["grad_scaler"])
        agent.skipped_steps = int(scaler.pop("skipped_steps", 0))
        agent.scaler.load_state_dict(scaler)
    agent.num_updates = int(state["num_updates"])
    _load_reward_moments(agent, state, hint)
    return state


def _load_reward_moments(agent: Agent, state: dict[str, Any], hint: str) -> None:
    """The running reward moments of a ``reward_norm`` run into ``agent`` (a checkpoint without them is one of a
    run that did not normalise: the agent starts its moments afresh, as the config it was built from says)."""
    if agent.reward_moments is None or "reward_moments" not in state:
        return
    try:
        agent.reward_moments.load_state_dict(state["reward_moments"])
    except ValueError as e:
        raise CorruptCheckpointError(f"{STATE_FILE}: {e}. {hint}") from None


def load_resume_state(path: str | Path) -> dict[str, Any] | None:
    """The exact-resume state (RNGs, env and collector state) of a checkpoint, or None if it has none."""
    path = checkpoint_dir(path)
    file = path / RESUME_FILE
    if not file.is_file():
        return None
    try:
        state = _from_safe(torch.load(file, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001
        raise CorruptCheckpointError(f"{file} cannot be loaded ({type(e).__name__}: {e}). {_hint(path)}") from None
    problem = schema.resume_problem(state)
    if problem:
        raise CorruptCheckpointError(f"{file}: {problem}. {_hint(path)}")
    return state
