"""Crash-safe checkpoints and exact resume of runners.train.

- a kill (``os._exit`` in a subprocess) at every step of the save sequence, then ``--resume``:
  the run always continues from the newest complete checkpoint and ends bit-identical to an
  uninterrupted run;
- corrupt / missing files give errors naming the file; permissions are normal;
- straight vs stopped-and-resumed runs (CatGrid and tiny text) have identical parameters.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners import train
from runners.common.atomic import CRASH_ENV, CRASH_EXIT_CODE, CorruptCheckpointError
from runners.common.checkpoint import checkpoint_dir, load_checkpoint, read_state, recover, run_dir_of

ROOT = Path(__file__).resolve().parents[2]
GRID = ["--total-timesteps", "512", "--num-envs", "8", "--num-steps", "16", "--eval-episodes", "0", "--no-progress",
        "--threads", "1", "--d-model", "32", "--n-layer", "1", "--checkpoint-every", "1", "--keep-checkpoints", "2"]
SAVE_STEPS = ["ckpt_model_written", "ckpt_files_written", "ckpt_synced", "ckpt_renamed", "ckpt_pointer_switched",
              "ckpt_pruned"]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoint" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs by {(wa[k] - wb[k]).abs().max().item()}"


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def straight_grid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    train.main([*GRID, "--log-dir", str(out), "--run-name", "r"])
    return out / "r"


@pytest.mark.parametrize("point", SAVE_STEPS)
def test_kill_at_every_save_step_then_resume_matches_straight_run(point, straight_grid, tmp_path, one_thread):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{CRASH_ENV: f"{point}:3"})  # die in the 3rd save (update 3)
    proc = subprocess.run([sys.executable, "-m", "runners.train", *GRID, "--log-dir", str(tmp_path), "--run-name",
                           "r"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr[-2000:]
    run = tmp_path / "r"
    renamed = SAVE_STEPS.index(point) >= SAVE_STEPS.index("ckpt_renamed")
    switched = SAVE_STEPS.index(point) >= SAVE_STEPS.index("ckpt_pointer_switched")
    assert read_state(run)["num_updates"] == (3 if switched else 2)  # readers see the last committed one
    assert read_state(recover(run / "checkpoint"))["num_updates"] == (3 if renamed else 2)  # newest complete wins
    result = train.main(["--resume", str(run)])
    assert result["global_step"] == 512
    assert read_state(run)["num_updates"] == 4
    assert sorted(p.name for p in run.iterdir() if p.name.startswith((".", "checkpoint"))) == [
        "checkpoint", "checkpoint-000003", "checkpoint-000004"]  # leftovers recovered, last 2 kept
    assert_same_weights(run, straight_grid)


def test_stop_and_resume_is_bit_identical_to_straight_run(straight_grid, tmp_path, one_thread):
    train.main([*GRID, "--log-dir", str(tmp_path), "--run-name", "r", "--stop-at-update", "2"])
    run = tmp_path / "r"
    assert read_state(run)["num_updates"] == 2
    train.main(["--resume", str(run)])
    assert_same_weights(run, straight_grid)
    for tag in ("losses/value_loss", "losses/approx_kl", "charts/episodic_return"):
        assert scalars(run, tag) == scalars(straight_grid, tag), tag


def test_reinforce_stop_and_resume_keeps_the_carried_episode_steps(tmp_path, one_thread):
    args = [*GRID, "--algo", "reinforce", "--log-dir", str(tmp_path)]
    straight = train.main([*args, "--run-name", "straight"])
    assert straight["agent"].carry is not None  # 16-step rollouts, 50-step episodes: steps are carried
    train.main([*args, "--run-name", "split", "--stop-at-update", "2"])
    train.main(["--resume", str(tmp_path / "split")])
    assert_same_weights(tmp_path / "split", tmp_path / "straight")


def test_running_reward_norm_resumes_exactly_from_its_saved_moments(tmp_path, one_thread):
    args = [*GRID, "--agent.reward-norm", "center", "--log-dir", str(tmp_path)]
    straight = train.main([*args, "--run-name", "straight"])
    moments = straight["agent"].reward_moments.state_dict()
    assert 4 * 8 * 16 - 40 < moments["count"] < 4 * 8 * 16  # every step of the 4 rollouts but their resets
    train.main([*args, "--run-name", "split", "--stop-at-update", "2"])
    assert read_state(tmp_path / "split")["reward_moments"]["count"] < moments["count"]  # the moments of 2 updates
    resumed = train.main(["--resume", str(tmp_path / "split")])
    assert resumed["agent"].reward_moments.state_dict() == moments
    assert read_state(tmp_path / "split")["reward_moments"] == moments
    assert_same_weights(tmp_path / "split", tmp_path / "straight")


def test_resume_with_larger_total_follows_the_original_schedule_rule(tmp_path, one_thread):
    train.main([*GRID, "--log-dir", str(tmp_path), "--run-name", "r"])
    run = tmp_path / "r"
    with pytest.raises(ValueError, match="reset-schedule"):  # LR annealed to 0 at update 4: more would be wasted
        train.main(["--resume", str(run), "--total-timesteps", "1024"])
    train.main(["--resume", str(run), "--total-timesteps", "1024", "--reset-schedule"])
    lrs = np.array([v for _, v in scalars(run, "charts/learning_rate")]) / 2.5e-4
    np.testing.assert_allclose(lrs, [1, 0.75, 0.5, 0.25, 0.5, 0.375, 0.25, 0.125])  # as if started with 8 updates


def test_one_resolver_pair_accepts_a_run_dir_its_pointer_or_a_version_dir(straight_grid, tmp_path):
    newest = straight_grid / "checkpoint-000004"
    for given in (straight_grid, straight_grid / "checkpoint", newest, str(newest)):
        assert checkpoint_dir(given) == newest.resolve()
        assert run_dir_of(given) == straight_grid
    assert run_dir_of(tmp_path / "checkpointed_run") == tmp_path / "checkpointed_run"  # a run dir, whatever its name
    run = tmp_path / "r"  # the pointer dangles (a crash between prune and switch): the newest complete version
    shutil.copytree(straight_grid, run, symlinks=True)
    (run / "checkpoint").unlink()
    (run / "checkpoint").symlink_to("checkpoint-000099")
    assert checkpoint_dir(run) == run / "checkpoint-000004"
    assert train.parse_args(["--resume", str(run / "checkpoint-000003")]).resume == str(run / "checkpoint-000003")


def test_checkpoint_files_have_normal_permissions(straight_grid):
    ckpt = (straight_grid / "checkpoint").resolve()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o777 & ~umask
    for f in ckpt.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f


def test_corrupt_or_partial_files_are_named(straight_grid, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(straight_grid, run, symlinks=True)
    ckpt = (run / "checkpoint").resolve()
    cfg = train.TrainConfig.from_dict(read_state(run)["config"])
    envs = train.make_envs(cfg)
    agent = train.build_agent(cfg, envs, total_updates=4)
    model = ckpt / "model.safetensors"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors is truncated.*checkpoint-000003"):
        load_checkpoint(run, agent)
    model.write_bytes(data[:-8] + b"\0" * 8)  # same size, altered
    with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors is corrupt"):
        load_checkpoint(run, agent)
    model.write_bytes(data)
    (ckpt / "optimizer.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"optimizer\.pt is missing.*--reset-optimizer"):
        load_checkpoint(run, agent)
    load_checkpoint(run, agent, reset_optimizer=True)
    with pytest.raises(FileNotFoundError, match=r"optimizer\.pt is missing"):
        train.main(["--resume", str(run), "--total-timesteps", "1024", "--reset-schedule"])
    envs.close()


@pytest.fixture(scope="module")
def text_setup(tiny_lm, tiny_tokenizer, imdb_dir):
    from envs.imdb import load_imdb

    texts = [r["text"] for r in load_imdb("train", source=imdb_dir, limit=200, seed=0)]
    overrides = {"model": tiny_lm, "tokenizer": tiny_tokenizer, "dataset": texts, "device": "cpu",
                 "reward_model": lambda ts: [t.count("e") / 10.0 for t in ts]}

    def config(tmp: Path, name: str, **kw) -> train.TrainConfig:
        cfg = train.preset("TextGen-IMDB-v0", "ppo")
        return dataclasses.replace(cfg, num_envs=4, num_steps=6, max_new_tokens=4, total_timesteps=4 * 6 * 4,
                                   agent=dataclasses.replace(cfg.agent, learning_rate=1e-3), kl_horizon=50.0,
                                   checkpoint_every=1, log_dir=str(tmp), run_name=name, threads=1, progress=False, **kw)

    return overrides, config


def test_text_stop_and_resume_is_bit_identical(text_setup, tmp_path, one_thread):
    overrides, config = text_setup
    straight = train.train(config(tmp_path, "straight"), env_overrides=overrides)
    train.train(config(tmp_path, "split", stop_at_update=2), env_overrides=overrides)
    split = train.train(config(tmp_path, "split", resume=str(tmp_path / "split")), env_overrides=overrides)
    assert split["global_step"] == straight["global_step"] == 96
    assert_same_weights(tmp_path / "split", tmp_path / "straight")
    assert read_state(tmp_path / "split")["kl_coef"] == read_state(tmp_path / "straight")["kl_coef"]
    for tag in ("objective/kl", "objective/scores", "losses/policy_loss"):
        a, b = scalars(tmp_path / "split", tag), scalars(tmp_path / "straight", tag)
        assert a == b and len(a) == 4, tag
    assert np.isfinite([v for _, v in scalars(tmp_path / "split", "objective/kl_coef")]).all()


def test_text_grpo_resume_with_carried_contexts_is_bit_identical(text_setup, tmp_path, one_thread):
    """GRPO on text carries the steps of unfinished groups, their observations as one context per chunk
    (agents.history_obs): the checkpoint holds them and the resumed run equals the straight one."""
    from runners.common.checkpoint import load_resume_state

    overrides, config = text_setup
    grpo = lambda tmp, name, **kw: dataclasses.replace(config(tmp, name, **kw), algo="grpo", group_size=2,  # noqa: E731
                                                        agent=dataclasses.replace(config(tmp, name).agent, algo="grpo"))
    train.train(grpo(tmp_path, "straight"), env_overrides=overrides)
    train.train(grpo(tmp_path, "split", stop_at_update=2), env_overrides=overrides)
    carry = load_resume_state(tmp_path / "split")["agent_carry"]
    assert carry is not None and "history_slot" in carry["obs"]  # a carry of stored chunk-end contexts
    train.train(grpo(tmp_path, "split", resume=str(tmp_path / "split")), env_overrides=overrides)
    assert_same_weights(tmp_path / "split", tmp_path / "straight")
