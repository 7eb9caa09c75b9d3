"""Run directories: never append to an existing run, record what a run really used, resume only unfinished runs.

- :func:`new_run_dir`: a fresh directory for a new run, claimed atomically by ``mkdir``. An explicit
  ``--run-name`` that already exists is refused (TensorBoard would interleave two runs in one chart); a default
  name gets a numeric suffix instead. A run name is one path component inside ``--log-dir``.
- :func:`check_resume_options`: ``--resume`` may change only the options of :data:`RESUME_MAY_CHANGE`.
- :func:`recorded_config`: the config as saved in ``state.json`` and TensorBoard, with the objects passed through
  ``env_overrides`` recorded as what they are (a path, or ``<in-memory object: ...>``), never as the hub default.
- :func:`check_reloadable`: a clear error when a run that used an in-memory object is reloaded without a
  replacement (``--model PATH``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

IN_MEMORY = "<in-memory object"
RELOAD_FIELDS = ("model", "reward_model", "dataset")
RESUME_MAY_CHANGE = frozenset({
    "total_timesteps", "checkpoint_every", "keep_checkpoints", "eval_episodes", "sample_every",  # length, cadence
    "progress", "track", "wandb_project", "wandb_entity",  # logging
    "device", "threads", "max_minutes", "dist_timeout",  # where and how long this process runs
    "resume", "reset_optimizer", "reset_schedule", "stop_at_update", "agent.anneal_lr",  # the resume's own options
})
"""The options ``--resume`` may change; every other option (those added later included) must keep its saved value."""


def check_run_name(run_name: str | None) -> str | None:
    """A problem with ``run_name`` (it must be one path component inside the log directory), or None."""
    if run_name is None:
        return None
    if run_name in ("", ".", "..") or "/" in run_name or os.sep in run_name or (os.altsep or "/") in run_name:
        return (f"run_name must be one directory name inside --log-dir (no '/', not '.' or '..'), got {run_name!r}; "
                "pick the parent directory with --log-dir")
    return None


def _no_checkpoint_hint(path: Path) -> str:
    if (path / "checkpoint").exists() or any(path.glob("checkpoint-*")):
        return f"continue it with `--resume {path}`, or pick another --run-name"
    return (f"it holds no checkpoint (a run stopped before its first one, or another run starting now): to start "
            f"over under this name delete it (rm -r {path}), or pick another --run-name")


def _make_log_dir(root: Path) -> None:
    try:  # a file, a dangling link or an unwritable parent: a clear error, not an endless search below
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"cannot create the log directory {root} ({e.strerror or e}); pick another "
                              "--log-dir") from None


def new_run_dir(log_dir: str | Path, run_name: str | None, default_name: str) -> Path:
    """A fresh run directory, claimed by creating it (``mkdir`` is atomic: two runs never share one).

    An explicit ``run_name`` that already exists is refused (FileExistsError saying how to continue or start
    over); a default name gets a numeric suffix instead."""
    if str(log_dir) == "":
        raise ValueError("--log-dir must not be empty (use --log-dir . for the current directory)")
    problem = check_run_name(run_name)
    if problem:
        raise ValueError(problem)
    root = Path(log_dir)
    _make_log_dir(root)
    path, k = root / (run_name or default_name), 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            if run_name:
                raise FileExistsError(
                    f"run directory {path} already exists; {_no_checkpoint_hint(path)} (a new run never appends "
                    "to an old one's TensorBoard events)."
                ) from None
            path, k = root / f"{default_name}_{k}", k + 1
        except OSError as e:
            raise PermissionError(f"cannot create the run directory {path} ({e.strerror or e}); pick a writable "
                                  "--log-dir") from None


def describe(value: Any) -> Any:
    """How a config records an env argument: strings and paths as themselves, anything else as an in-memory object."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    kind = getattr(value, "__name__", None) or type(value).__name__
    return f"{IN_MEMORY}: {kind}>"


def recorded_config(config: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``config`` with every key given in ``overrides`` replaced by :func:`describe` of the value really used."""
    out = dict(config)
    for key, value in (overrides or {}).items():
        if key in out or key in RELOAD_FIELDS:
            out[key] = describe(value)
    return out


def check_reloadable(config: Any, supplied: dict[str, Any] | None = None) -> None:
    """ValueError naming the flags to pass when the config refers to in-memory objects not ``supplied`` again."""
    missing = []
    for key in RELOAD_FIELDS:
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        if isinstance(value, str) and value.startswith(IN_MEMORY) and key not in (supplied or {}):
            missing.append(f"--{key.replace('_', '-')} PATH (was {value})")
    if missing:
        raise ValueError(
            "this run was trained with in-memory objects that a run directory cannot hold; pass them again: "
            + "; ".join(missing) + " (in Python: env_overrides={...})."
        )


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def changed_options(new: dict[str, Any], saved: dict[str, Any], defaults: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(option, saved value, new value) for each option outside :data:`RESUME_MAY_CHANGE` that ``new`` changes;
    a key a (older) saved config lacks counts with its value in ``defaults``."""
    new, saved, defaults = (_flat(json.loads(json.dumps(c, default=str))) for c in (new, saved, defaults))
    return [(key, saved.get(key, defaults.get(key)), value) for key, value in new.items()
            if key not in RESUME_MAY_CHANGE and saved.get(key, defaults.get(key)) != value
            and not _supplied_again(key, saved.get(key))]


def _supplied_again(key: str, saved: Any) -> bool:
    """An in-memory object a run directory cannot hold is passed again on resume (:func:`check_reloadable`)."""
    return key in RELOAD_FIELDS and isinstance(saved, str) and saved.startswith(IN_MEMORY)


def check_resume_options(run_dir: Path, new: dict[str, Any], saved: dict[str, Any], defaults: dict[str, Any]) -> None:
    """ValueError listing every option ``new`` changes that a resumed run must keep (see :data:`RESUME_MAY_CHANGE`)."""
    changed = changed_options(new, saved, defaults)
    if changed:
        listed = "; ".join(f"{_flag(k)}: saved {old!r}, given {value!r}" for k, old, value in changed)
        allowed = ", ".join(_flag(k) for k in sorted(RESUME_MAY_CHANGE))
        raise ValueError(f"--resume {run_dir} cannot change options the run was trained with: {listed}. Drop them "
                         f"to continue the run, or start a new run to train with them. On resume only {allowed} "
                         "may change.")


def finished_message(run_dir: Path, state: dict[str, Any], total_updates: int) -> str | None:
    """A message when a resumed run has already done ``total_updates`` updates, else None."""
    done = int(state.get("num_updates", 0))
    if done < total_updates:
        return None
    return (f"run {run_dir} is already finished ({done} updates, {state.get('global_step')} env steps); "
            "nothing to do. To train further, resume with a larger --total-timesteps.")
