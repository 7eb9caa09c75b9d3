"""runners.common.end_of_run: a crash after the final checkpoint, at every end-of-run step, is repaired by
``--resume``, which writes every missing artefact (the exported policy, ``eval.json`` and its TensorBoard
records) and only then says the run is finished; artefacts of an earlier end are stale and written again.

The crash points come from ``run_loop.END_STEPS``, so an end-of-run step added later is covered here too (add its
intra-step crash points to ``INSIDE``). One real ``kill`` (``os._exit`` in a subprocess, the issue's repro); the
others run in-process with ``os._exit`` replaced by an exception, which unwinds like a kill (no cleanup runs:
the end steps and the savers only clean up their own temporary files).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners import train
from runners.common import atomic
from runners.common.atomic import CRASH_ENV, CRASH_EXIT_CODE
from runners.common.end_of_run import LEDGER, read_ledger
from runners.common.run_loop import END_STEPS

ROOT = Path(__file__).resolve().parents[2]
GRID = ["--total-timesteps", "256", "--num-envs", "8", "--num-steps", "16", "--eval-episodes", "8", "--no-progress",
        "--threads", "1", "--d-model", "32", "--n-layer", "1", "--checkpoint-every", "1"]
INSIDE = {"export": ["hf_renamed"], "eval": ["end_eval_logged"]}  # crash points within a step


def crash_points(network: str, eval_on: bool) -> list[str]:
    """Every end-of-run crash point of a run: right after the final checkpoint, inside and after each step."""
    state = {"network": network, "num_updates": 2, "global_step": 0}
    cfg = dataclasses.replace(train.TrainConfig(), eval_episodes=8 if eval_on else 0, total_timesteps=2 * 64 * 64)
    points = ["ckpt_pruned:2"]  # the final (2nd) checkpoint is complete, nothing of the end is written
    for step in END_STEPS:
        if step.applies(cfg, state):
            points += [*INSIDE.get(step.name, []), f"end_{step.name}_done"]
    return points


class Killed(BaseException):
    """What ``os._exit`` raises in-process: not an Exception, so no ``except Exception`` handler sees it."""


@pytest.fixture
def kill_at(monkeypatch):
    def arm(point: str) -> None:
        monkeypatch.setenv(CRASH_ENV, point)
        monkeypatch.setattr(atomic, "_crash_counts", {})

        def _exit(code: int) -> None:
            raise Killed(code)

        monkeypatch.setattr(os, "_exit", _exit)
    return arm


def eval_tables(run_dir: Path) -> list[str]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    if "eval/final/text_summary" not in acc.Tags()["tensors"]:
        return []
    return [e.tensor_proto.string_val[0].decode() for e in acc.Tensors("eval/final/text_summary")]


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def straight_grid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight_end")
    train.main([*GRID, "--log-dir", str(out), "--run-name", "r"])
    return out / "r"


def _resume_repairs(run: Path, straight: Path, capsys, args: list[str] | None = None, **kw) -> None:
    """--resume writes what is missing, then says finished; a second --resume writes nothing."""
    capsys.readouterr()
    result = train.main(["--resume", str(run), *(args or [])]) if "cfg" not in kw else train.train(**kw)
    err = capsys.readouterr().err
    assert result["finished"] is True and "already finished" in err
    assert (run / "eval.json").read_text() == (straight / "eval.json").read_text()  # the same evaluation
    tables = eval_tables(run)
    assert tables and tables[-1] == eval_tables(straight)[-1]  # its TensorBoard record is there
    assert read_ledger(run) == read_ledger(straight)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    again = train.main(["--resume", str(run)]) if "cfg" not in kw else train.train(**kw)
    assert again["finished"] is True and "already finished" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_the_issue_repro_a_kill_after_the_final_checkpoint_is_repaired(straight_grid, tmp_path, capsys, one_thread):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{CRASH_ENV: "ckpt_pruned:2"})
    proc = subprocess.run([sys.executable, "-m", "runners.train", *GRID, "--log-dir", str(tmp_path), "--run-name",
                           "r"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr[-2000:]
    assert not (tmp_path / "r" / "eval.json").exists()
    _resume_repairs(tmp_path / "r", straight_grid, capsys)
    for tag in ("losses/value_loss", "charts/episodic_return"):  # the last update's records were flushed in time
        assert scalars(tmp_path / "r", tag) == scalars(straight_grid, tag), tag


@pytest.mark.parametrize("point", crash_points("GridTransformer", eval_on=True)[1:])
def test_catgrid_crash_at_every_end_step_is_repaired(point, straight_grid, tmp_path, capsys, kill_at, one_thread):
    kill_at(point)
    with pytest.raises(Killed):
        train.main([*GRID, "--log-dir", str(tmp_path), "--run-name", "r"])
    os.environ.pop(CRASH_ENV)
    _resume_repairs(tmp_path / "r", straight_grid, capsys)


def test_a_stale_artefact_of_an_earlier_end_is_written_again(straight_grid, tmp_path, capsys, kill_at, one_thread):
    """Resumed to a larger budget, a run whose new end crashed still holds the OLD eval.json: it is redone."""
    run = tmp_path / "r"
    train.main([*GRID, "--log-dir", str(tmp_path), "--run-name", "r", "--total-timesteps", "128"])
    old = (run / "eval.json").read_text()
    kill_at("ckpt_pruned:1")
    with pytest.raises(Killed):
        train.main(["--resume", str(run), "--total-timesteps", "256", "--agent.no-anneal-lr"])
    os.environ.pop(CRASH_ENV)
    assert (run / "eval.json").read_text() == old and read_ledger(run)["global_step"] == 128
    train.main(["--resume", str(run), "--total-timesteps", "256", "--agent.no-anneal-lr"])
    assert read_ledger(run) == {"global_step": 256, "done": ["eval"]}
    assert json.loads((run / "eval.json").read_text()) != json.loads(old)


@pytest.fixture(scope="module")
def text_run(tiny_lm, tiny_tokenizer, imdb_dir, tmp_path_factory):
    from envs.imdb import load_imdb

    texts = [r["text"] for r in load_imdb("train", source=imdb_dir, limit=100, seed=0)]
    overrides = {"model": tiny_lm, "tokenizer": tiny_tokenizer, "dataset": texts, "device": "cpu",
                 "reward_model": lambda ts: [t.count("e") / 10.0 for t in ts]}

    def config(tmp: Path, name: str, **kw) -> train.TrainConfig:
        cfg = train.preset("TextGen-IMDB-v0", "ppo")
        return dataclasses.replace(cfg, num_envs=2, num_steps=4, max_new_tokens=3, total_timesteps=2 * 4 * 2,
                                   agent=dataclasses.replace(cfg.agent, update_epochs=1, num_minibatches=1),
                                   checkpoint_every=1, eval_episodes=2, log_dir=str(tmp), run_name=name, threads=1,
                                   progress=False, **kw)

    out = tmp_path_factory.mktemp("text_end")
    train.train(config(out, "straight"), env_overrides=overrides)
    return overrides, config, out / "straight"


@pytest.mark.parametrize("point", crash_points("CausalLMPolicy", eval_on=True))
def test_text_crash_at_every_end_step_is_repaired(point, text_run, tmp_path, capsys, kill_at, one_thread):
    overrides, config, straight = text_run
    kill_at(point)
    with pytest.raises(Killed):
        train.train(config(tmp_path, "r"), env_overrides=overrides)
    os.environ.pop(CRASH_ENV)
    run = tmp_path / "r"
    assert read_ledger(run)["done"] == {"ckpt_pruned:2": [], "hf_renamed": [],
                                        "end_export_done": ["export"], "end_eval_logged": ["export"],
                                        "end_eval_done": ["export", "eval"]}[point]
    cfg = config(tmp_path, "r", resume=str(run))
    _resume_repairs(run, straight, capsys, cfg=cfg, env_overrides=overrides)
    for name in ("policy/model.safetensors", "policy/config.json", "value_head.safetensors"):
        assert (run / name).read_bytes() == (straight / name).read_bytes(), name
    assert (run / LEDGER).is_file()
