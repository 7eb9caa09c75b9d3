"""Fault sweep of runners.train on CatGrid-v0: kills at every save and end-of-run step, corrupted or hostile
checkpoint files, bad inputs, option changes on ``--resume``, runs sharing a name. Prints one table row per
category: cases, clear errors (the message names the expected cause), unclear errors, silently accepted, data lost.

Run: ``python benchmarks/fault_sweep.py`` (about a minute on 2 cores). Kills are injected in-process at the
crash points of ``RLHF_GYM_CRASH_AT`` (``os._exit`` raises instead, so no cleanup code runs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import tyro
from safetensors.torch import load_file, save_file

from runners import load_agent, train
from runners.common import atomic
from runners.common import run_dir as runs
from runners.common.atomic import CRASH_ENV, write_manifest
from runners.common.checkpoint import read_state

TINY = ["--total-timesteps", "256", "--num-envs", "8", "--num-steps", "16", "--eval-episodes", "8", "--no-progress",
        "--threads", "1", "--d-model", "32", "--n-layer", "1", "--checkpoint-every", "1"]
KILLS = ["ckpt_model_written:2", "ckpt_files_written:2", "ckpt_synced:2", "ckpt_renamed:2", "ckpt_pointer_switched:2",
         "ckpt_pruned:1", "ckpt_pruned:2", "end_eval_logged", "end_eval_done"]
RESUME_CHANGES = [["--algo", "reinforce"], ["--seed", "1"], ["--slip", "0.1"], ["--group-size", "2"],
                  ["--map-name", "8x8"], ["--d-model", "64"], ["--num-envs", "4"], ["--env", "TextGen-IMDB-v0"],
                  ["--agent.learning-rate", "0.1"], ["--reward-scale", "1.0"]]


class Killed(BaseException):
    """``os._exit`` in-process."""


def _exit(code: int) -> None:
    raise Killed(code)


def outcome(action: Callable[[], object], expect: str, check: Callable[[], bool] | None = None) -> str:
    """"clear" (raised, message names ``expect``), "unclear" (raised otherwise), "silent" (no error though one
    was due: ``check`` None) or, for a fault that must be repaired, "ok"/"lost" by ``check()``."""
    try:
        action()
    except Exception as e:  # noqa: BLE001
        return "clear" if expect.lower() in str(e).lower() else f"unclear: {type(e).__name__}: {str(e)[:80]}"
    if check is None:
        return "silent"
    return "ok" if check() else "lost"


def same_run(run: Path, straight: Path) -> bool:
    """Resumed after a kill, the run ends as the uninterrupted one: same weights, same eval.json."""
    a, b = (load_file(str(r / "checkpoint" / "model.safetensors")) for r in (run, straight))
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return same and (run / "eval.json").is_file() and (run / "eval.json").read_text() == (
        straight / "eval.json").read_text()


def kill_cases(tmp: Path, straight: Path) -> list[str]:
    results = []
    for point in KILLS:
        os.environ[CRASH_ENV] = point
        atomic._crash_counts.clear()
        try:
            train.main([*TINY, "--log-dir", str(tmp), "--run-name", point.replace(":", "_")])
        except Killed:
            pass
        finally:
            os.environ.pop(CRASH_ENV)
        run = tmp / point.replace(":", "_")
        results.append(outcome(lambda run=run: train.main(["--resume", str(run)]), "",
                               lambda run=run: same_run(run, straight)))
    return results


def _edit_state(ckpt: Path, key: str, value: object) -> None:
    state = json.loads((ckpt / "state.json").read_text())
    state[key] = value
    (ckpt / "state.json").write_text(json.dumps(state))


def _nan_weights(ckpt: Path) -> None:
    w = load_file(str(ckpt / "model.safetensors"))
    w = {k: torch.full_like(v, float("nan")) for k, v in w.items()}
    save_file(w, str(ckpt / "model.safetensors"))


def _small_moments(ckpt: Path) -> None:
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    for moments in opt["state"].values():
        moments["exp_avg"] = torch.zeros(1)
    torch.save(opt, ckpt / "optimizer.pt")


def _bad_rng(ckpt: Path) -> None:
    state = torch.load(ckpt / "resume.pt", weights_only=True)
    state["rngs"]["torch"] = 7
    torch.save(state, ckpt / "resume.pt")


def checkpoint_cases(tmp: Path, straight: Path) -> list[str]:
    edits: list[tuple[str, Callable[[Path], None], bool]] = [  # (what the error names, the edit, re-hash)
        ("global_step", lambda c: _edit_state(c, "global_step", "x"), True),
        ("num_updates", lambda c: _edit_state(c, "num_updates", None), True),
        ("lr_schedule", lambda c: _edit_state(c, "lr_schedule", []), True),
        ("non-finite", _nan_weights, True), ("exp_avg", _small_moments, True), ("rngs.torch", _bad_rng, True),
        ("truncated", lambda c: (c / "model.safetensors").write_bytes(b"\0" * 10), False),
        ("corrupt", lambda c: (c / "state.json").write_text((c / "state.json").read_text().replace("0", "1")), False),
    ]
    results = []
    for k, (expect, edit, rehash) in enumerate(edits):
        run = tmp / f"ck{k}"
        shutil.copytree(straight, run, symlinks=True)
        ckpt = (run / "checkpoint").resolve()
        edit(ckpt)
        if rehash:
            write_manifest(ckpt)
        results.append(outcome(lambda run=run: train.main(["--resume", str(run), "--total-timesteps", "512",
                                                           "--agent.no-anneal-lr"]), expect))
    run = tmp / "link"
    shutil.copytree(straight, run, symlinks=True)
    for version in run.glob("checkpoint-*"):
        shutil.rmtree(version)
    (run / "checkpoint").unlink()
    (run / "checkpoint").symlink_to((straight / "checkpoint").resolve())
    results.append(outcome(lambda: load_agent(run, device="cpu"), "outside its run directory"))
    return results


def input_cases(tmp: Path) -> list[str]:
    base = train.TrainConfig()
    bad: list[tuple[dict[str, object], str]] = [
        ({"run_name": "../../x"}, "run_name"), ({"run_name": "/abs"}, "run_name"), ({"run_name": "."}, "run_name"),
        ({"log_dir": ""}, "log_dir"), ({"seed": 2**32}, "seed"), ({"seed": -1}, "seed"), ({"slip": 1.0}, "slip"),
        ({"num_envs": 6, "group_size": 4}, "group_size"), ({"total_timesteps": 10}, "total_timesteps"),
    ]
    results = [outcome(lambda kw=kw: dataclasses.replace(base, **kw), expect) for kw, expect in bad]
    results.append(outcome(lambda: train.main([*TINY, "--device", "cuda:7", "--log-dir", str(tmp)]), "cuda")
                   if not torch.cuda.is_available() else "clear")
    return results


def resume_cases(tmp: Path, straight: Path) -> list[str]:
    results = []
    for k, change in enumerate(RESUME_CHANGES):
        run = tmp / f"res{k}"
        shutil.copytree(straight, run, symlinks=True)
        results.append(outcome(lambda run=run, change=change: train.main(["--resume", str(run), *change]),
                               f"{change[0]}: saved"))
    return results


def name_cases(tmp: Path) -> list[str]:
    first = runs.new_run_dir(tmp / "shared", "same", "d")
    results = [outcome(lambda: runs.new_run_dir(tmp / "shared", "same", "d"), "already exists") for _ in range(3)]
    (first / "events.out.tfevents.0").write_bytes(b"")  # killed before its first checkpoint
    results.append(outcome(lambda: train.main(["--resume", str(first)]), "holds no checkpoint"))
    return results


@dataclasses.dataclass
class Args:
    keep: bool = False
    """keep the temporary run directories (printed)"""


def main(args: Args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fault_sweep_"))
    real_exit = os._exit
    os._exit = _exit  # type: ignore[assignment]
    try:
        train.main([*TINY, "--log-dir", str(tmp), "--run-name", "straight"])
        straight = tmp / "straight"
        assert read_state(straight)["num_updates"] == 2
        table = {"kill during save / end of run": kill_cases(tmp, straight),
                 "corrupted or hostile checkpoint": checkpoint_cases(tmp, straight),
                 "bad inputs": input_cases(tmp), "option changed on --resume": resume_cases(tmp, straight),
                 "runs sharing a name": name_cases(tmp)}
    finally:
        os._exit = real_exit  # type: ignore[assignment]
    print("| category | cases | clear error / repaired | unclear error | silently accepted | data lost |")
    print("|---|---|---|---|---|---|")
    for category, results in table.items():
        good = sum(r in ("clear", "ok") for r in results)
        unclear = [r for r in results if r.startswith("unclear")]
        print(f"| {category} | {len(results)} | {good} | {len(unclear)} | {results.count('silent')} | "
              f"{results.count('lost')} |")
        for r in unclear:
            print(f"    {r}")
    if args.keep:
        print(f"runs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
