"""Run directories: never append to an existing run, record what a run really used, resume only unfinished runs.

- :func:`new_run_dir`: a fresh directory for a new run. An explicit ``--run-name`` that already holds a run is
  refused (TensorBoard would interleave two runs in one chart); a default name gets a numeric suffix instead.
- :func:`recorded_config`: the config as saved in ``state.json`` and TensorBoard, with the objects passed through
  ``env_overrides`` recorded as what they are (a path, or ``<in-memory object: ...>``), never as the hub default.
- :func:`check_reloadable`: a clear error when a run that used an in-memory object is reloaded without a
  replacement (``--model PATH``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

IN_MEMORY = "<in-memory object"
RELOAD_FIELDS = ("model", "reward_model", "dataset")


def _is_run(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def new_run_dir(log_dir: str | Path, run_name: str | None, default_name: str) -> Path:
    """``log_dir/run_name`` (FileExistsError if it already holds a run) or a fresh ``log_dir/default_name[_k]``.

    A default name is claimed by creating its directory here (an existing directory, even an empty one, is never
    chosen by default); an explicit ``run_name`` is only checked, not created."""
    if run_name:
        path = Path(log_dir) / run_name
        if _is_run(path):
            raise FileExistsError(
                f"run directory {path} already exists; continue it with `--resume {path}`, or pick another "
                "--run-name (a new run never appends to an old one's TensorBoard events)."
            )
        return path
    root = Path(log_dir)
    try:  # a file, a dangling link or an unwritable parent: a clear error, not an endless search below
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"cannot create the log directory {root} ({e.strerror or e}); pick another "
                              "--log-dir") from None
    path, k = root / default_name, 1
    while True:  # mkdir is the atomic claim: two runs started in the same second never share a directory
        try:
            path.mkdir()
            return path
        except FileExistsError:
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


def finished_message(run_dir: Path, state: dict[str, Any], total_updates: int) -> str | None:
    """A message when a resumed run has already done ``total_updates`` updates, else None."""
    done = int(state.get("num_updates", 0))
    if done < total_updates:
        return None
    return (f"run {run_dir} is already finished ({done} updates, {state.get('global_step')} env steps); "
            "nothing to do. To train further, resume with a larger --total-timesteps.")
