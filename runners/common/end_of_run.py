"""The end of a run as a list of idempotent steps, so that a crash between them is repaired by ``--resume``.

After its final checkpoint a run still writes artefacts: the exported text policy, the final evaluation
(``eval.json`` and its TensorBoard records), and whatever later end-of-run artefacts are added. Each is one
:class:`EndStep`: its name, whether it applies to this run, the files it writes (relative to the run directory),
and the function that writes them. :func:`run_steps` runs the steps that are not done, in order, and records
each one in ``<run dir>/end_of_run.json`` (``{"global_step": ..., "done": [names]}``, replaced atomically) once
its files are complete. A step is done when all its files exist AND the ledger names it for the checkpoint's
``global_step``; an artefact of an earlier end (before the run was resumed to a larger budget) is stale and
written again. ``--resume`` of a finished run runs the pending steps and only then says the run is finished.

A new end-of-run artefact is one more :class:`EndStep` in the list the training loop passes here; the
crash-at-every-end-step test (``tests/runners/test_end_of_run.py``) then covers it too.
Kill injection: ``RLHF_GYM_CRASH_AT=end_<name>_done`` exits right after step ``<name>`` is recorded.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.common.atomic import crash_point, fsync_dir, fsync_file

LEDGER = "end_of_run.json"


@dataclass(frozen=True)
class EndStep:
    """One end-of-run artefact: ``applies(cfg, state)`` (state: the final checkpoint's ``state.json``) says
    whether this run writes it, ``files`` are what it writes, ``write(run, result)`` writes them (and may put
    entries into the run's result dict)."""

    name: str
    files: tuple[str, ...]
    applies: Callable[[Any, dict[str, Any]], bool]
    write: Callable[[Any, dict[str, Any]], None]


def read_ledger(run_dir: Path) -> dict[str, Any]:
    """The ledger of completed end steps (empty when absent or unreadable: the steps are simply redone)."""
    try:
        ledger = json.loads((run_dir / LEDGER).read_text())
    except (OSError, ValueError):
        return {"global_step": None, "done": []}
    if not isinstance(ledger, dict) or not isinstance(ledger.get("done"), list):
        return {"global_step": None, "done": []}
    return ledger


def is_done(step: EndStep, run_dir: Path, global_step: int) -> bool:
    """Every file of ``step`` exists and the ledger records ``step`` for this ``global_step``."""
    ledger = read_ledger(run_dir)
    return (ledger.get("global_step") == global_step and step.name in ledger["done"]
            and all((run_dir / f).exists() for f in step.files))


def pending(steps: Sequence[EndStep], cfg: Any, run_dir: Path, state: dict[str, Any]) -> list[EndStep]:
    """The steps this run still has to do at the checkpoint described by ``state``."""
    return [s for s in steps if s.applies(cfg, state) and not is_done(s, run_dir, int(state["global_step"]))]


def write_json_atomic(path: Path, obj: Any) -> None:
    """``path`` replaced by ``obj`` as JSON in one rename (a crash leaves the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=str))
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _mark_done(run_dir: Path, name: str, global_step: int) -> None:
    ledger = read_ledger(run_dir)
    done = ledger["done"] if ledger.get("global_step") == global_step else []
    write_json_atomic(run_dir / LEDGER, {"global_step": global_step, "done": [*done, name]})


def run_steps(steps: Sequence[EndStep], run: Any, result: dict[str, Any], state: dict[str, Any]) -> list[str]:
    """Run the pending ``steps`` of ``run`` (``run.cfg``, ``run.run_dir``) in order; returns their names."""
    todo = pending(steps, run.cfg, run.run_dir, state)
    for step in todo:
        step.write(run, result)
        _mark_done(run.run_dir, step.name, int(state["global_step"]))
        crash_point(f"end_{step.name}_done")
    return [s.name for s in todo]
