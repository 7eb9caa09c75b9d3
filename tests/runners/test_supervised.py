"""runners.common.supervised, the mechanics the SFT and reward-model stages share.

- the LR schedule and the seeded batch order (pure functions);
- step-based lengths: same command + seed -> bit-identical model files (CPU, same torch and thread count); a
  wall-clock cap may only stop a run early (and say so), never change the schedule of a run that finishes;
- a kill at any step of a save, then --resume, ends like an uninterrupted run; an unwritable output dir fails
  before any training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from runners import sft, train_reward
from runners.common import supervised
from runners.common.atomic import CRASH_ENV, CRASH_EXIT_CODE
from runners.common.supervised import batch_indices, lr_factor
from runners.sft import SFTConfig, run_sft
from runners.train_reward import RewardConfig, run_reward_training

ROOT = Path(__file__).resolve().parents[2]
HF_SAVE_STEPS = ["hf_files_written", "hf_synced", "hf_moved_aside", "hf_renamed", "hf_cleaned"]


def test_lr_factor_warms_up_then_decays_to_the_floor() -> None:
    assert lr_factor(0, 0.0, warmup_steps=10, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(9, 0.0, warmup_steps=10, min_ratio=0.1) == pytest.approx(1.0)
    assert lr_factor(50, 0.5, warmup_steps=10, min_ratio=0.1) == pytest.approx(0.55)
    assert lr_factor(99, 1.0, warmup_steps=10, min_ratio=0.1) == pytest.approx(0.1)


def test_batch_indices_cover_an_epoch_once_and_are_reproducible() -> None:
    seen = torch.cat([batch_indices(s, 20, 5, seed=3) for s in range(4)])
    assert sorted(seen.tolist()) == list(range(20))
    assert torch.equal(batch_indices(2, 20, 5, seed=3), batch_indices(2, 20, 5, seed=3))
    assert not torch.equal(batch_indices(4, 20, 5, seed=3), batch_indices(0, 20, 5, seed=3))  # new epoch


def _bytes(directory: Path, name: str = "model.safetensors") -> bytes:
    return (directory / name).read_bytes()


def _sft(tiny_lm_dir: Path, review_file: Path, out: Path, **kw) -> SFTConfig:
    base = dict(model=str(tiny_lm_dir), data=str(review_file), output_dir=str(out), log_dir=str(out.parent / "runs"),
                eval_reviews=20, block_size=32, batch_size=4, learning_rate=3e-3, warmup_steps=3, eval_every=1000,
                num_samples=1, sample_tokens=4, max_steps=8, num_threads=1)
    return SFTConfig(**(base | kw))


def test_sft_same_seed_bit_identical_and_a_cap_that_does_not_bite_changes_nothing(
        tmp_path: Path, tiny_lm_dir: Path, review_file: Path) -> None:
    a = run_sft(_sft(tiny_lm_dir, review_file, tmp_path / "a"))
    b = run_sft(_sft(tiny_lm_dir, review_file, tmp_path / "b"))
    capped = run_sft(_sft(tiny_lm_dir, review_file, tmp_path / "c", max_minutes=60.0))  # never reached
    run_sft(_sft(tiny_lm_dir, review_file, tmp_path / "d", seed=1))
    assert a["step"] == b["step"] == capped["step"] == 8
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "c")  # the LR schedule does not look at the clock
    assert _bytes(tmp_path / "a") != _bytes(tmp_path / "d")
    assert a["stopped_early"] is None and a["eval_loss"] == b["eval_loss"]


def test_sft_from_scratch_preset_is_reproducible_tokenizer_included(tmp_path: Path, review_file: Path) -> None:
    from runners.sft import tiny_config

    def run(name: str) -> Path:
        cfg = tiny_config(data=str(review_file), output_dir=str(tmp_path / name), log_dir=str(tmp_path / "runs"),
                          max_train_reviews=None, tokenizer_reviews=200, vocab_size=600, n_layer=1, n_embd=32,
                          n_head=2, block_size=32, batch_size=4, max_steps=4, eval_reviews=10, num_samples=1,
                          sample_tokens=4, num_threads=1)
        run_sft(cfg)
        return tmp_path / name

    a, b = run("a"), run("b")
    assert _bytes(a) == _bytes(b)
    assert _bytes(a, "tokenizer.json") == _bytes(b, "tokenizer.json")


class _Clock:
    """A clock that advances one second per reading: a wall-clock cap bites after a fixed number of steps."""

    now = 0.0

    @classmethod
    def monotonic(cls) -> float:
        cls.now += 1.0
        return cls.now


def test_wall_clock_cap_stops_early_and_says_so(tmp_path: Path, tiny_lm_dir: Path, review_file: Path,
                                                capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervised, "time", _Clock)  # the one module of the stages that reads the clock
    m = run_sft(_sft(tiny_lm_dir, review_file, tmp_path / "capped", max_minutes=10 / 60))
    assert 0 < m["step"] < 8
    assert "wall-clock cap" in m["stopped_early"] and "NOT the configured run" in m["stopped_early"]
    assert "WARNING" in capsys.readouterr().err
    saved = json.loads((tmp_path / "capped" / "metrics.json").read_text())
    assert saved["stopped_early"] == m["stopped_early"]


def test_cap_before_the_first_step_is_an_error_and_writes_nothing(tmp_path: Path, tiny_lm_dir: Path,
                                                                  review_file: Path) -> None:
    with pytest.raises(RuntimeError, match="before the first optimisation step.*nothing was written"):
        run_sft(_sft(tiny_lm_dir, review_file, tmp_path / "sft", max_minutes=1e-9))
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps({"chosen": f"good {i}", "rejected": f"bad {i}"}) + "\n"
                                                  for i in range(40)))
    with pytest.raises(RuntimeError, match="reward model: stopped before the first optimisation step"):
        run_reward_training(RewardConfig(init=str(tiny_lm_dir), pairs=str(tmp_path / "prefs.jsonl"), batch_size=1,
                                         output_dir=str(tmp_path / "rm"), log_dir=str(tmp_path / "runs"),
                                         max_minutes=1e-9, num_threads=1))
    assert not (tmp_path / "sft").exists() and not (tmp_path / "rm").exists()


def test_reward_model_same_seed_bit_identical(tmp_path: Path, tiny_lm_dir: Path) -> None:
    words = ["film", "plot", "cast", "story", "music", "ending", "script", "actor"]
    lines = [json.dumps({"chosen": f"the {w} was excellent", "rejected": f"the {w} was dreadful"}) for w in words * 8]
    (tmp_path / "prefs.jsonl").write_text("\n".join(lines) + "\n")

    def run(name: str, **kw) -> dict:
        cfg = RewardConfig(init=str(tiny_lm_dir), pairs=str(tmp_path / "prefs.jsonl"), output_dir=str(tmp_path / name),
                           log_dir=str(tmp_path / "runs"), batch_size=8, learning_rate=3e-3, warmup_steps=2,
                           max_steps=6, eval_every=1000, max_length=16, num_threads=1, **kw)
        return run_reward_training(cfg)

    a = run("a")
    run("b"), run("c", max_minutes=60.0)
    assert a["step"] == 6 and a["stopped_early"] is None
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b") == _bytes(tmp_path / "c")
    assert _bytes(tmp_path / "a") != _bytes(tmp_path / run("d", seed=1)["output_dir"].split("/")[-1])


# ------------------------------------------------------------------ a kill during a save, then --resume
def rm_args(pairs: Path, out: Path, logs: Path) -> list[str]:
    return ["--pairs", str(pairs), "--output-dir", str(out), "--log-dir", str(logs), "--vocab-size", "300",
            "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--max-length", "16", "--batch-size", "8",
            "--max-steps", "6", "--save-every", "2", "--eval-every", "100", "--warmup-steps", "1",
            "--device", "cpu", "--num-threads", "1"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    words = ["film", "plot", "actor", "story", "scene", "music", "ending", "cast"]
    rows = [{"chosen": f"a good and great {w} {i}", "rejected": f"a bad and awful {w} {i}"}
            for i in range(12) for w in words]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def straight_rm(pairs, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("rm_straight")
    train_reward.main(rm_args(pairs, tmp / "rm", tmp / "logs"))
    return tmp / "rm"


@pytest.mark.parametrize("point", HF_SAVE_STEPS)
def test_reward_model_killed_during_a_save_resumes_exactly(point, pairs, straight_rm, tmp_path):
    args = rm_args(pairs, tmp_path / "rm", tmp_path / "logs")
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{CRASH_ENV: f"{point}:2"})  # die in the save at step 4
    proc = subprocess.run([sys.executable, "-m", "runners.train_reward", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr[-2000:]
    metrics = train_reward.main([*args, "--resume"])
    assert metrics["step"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "rm"]  # leftovers recovered / removed
    state = torch.load(tmp_path / "rm" / supervised.STATE_FILE, weights_only=True)
    assert state["step"] == 6
    same_weights(tmp_path / "rm", straight_rm)


def test_sft_killed_while_the_old_copy_is_aside_resumes(tiny_lm_dir, imdb_dir, tmp_path):
    from envs.imdb import load_imdb

    data = tmp_path / "reviews.jsonl"
    data.write_text("\n".join(json.dumps({"text": r["text"]}) for r in load_imdb("train", source=imdb_dir, limit=40)))
    args = ["--model", str(tiny_lm_dir), "--data", str(data), "--output-dir", str(tmp_path / "sft"),
            "--log-dir", str(tmp_path / "logs"), "--block-size", "32", "--batch-size", "4", "--max-steps", "4",
            "--save-every-minutes", "0", "--eval-every", "100", "--eval-reviews", "5", "--num-samples", "0",
            "--warmup-steps", "1", "--device", "cpu", "--num-threads", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{CRASH_ENV: "hf_moved_aside:2"})
    proc = subprocess.run([sys.executable, "-m", "runners.sft", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr[-2000:]
    assert not (tmp_path / "sft").exists()  # the crash window: only hidden copies exist
    metrics = sft.main([*args, "--resume"])
    assert metrics["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "reviews.jsonl", "sft"]
    straight = sft.main([*args[:5], str(tmp_path / "straight"), *args[6:]])
    assert straight["step"] == 4
    same_weights(tmp_path / "sft", tmp_path / "straight")


@pytest.mark.parametrize("stage", ["sft", "reward"])
def test_unwritable_output_dir_fails_before_training(stage, tmp_path, pairs, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    if stage == "sft":
        cfg = sft.SFTConfig(model="unused", output_dir=str(blocker / "out"), log_dir=str(tmp_path))
        run = sft.run_sft
    else:
        cfg = train_reward.RewardConfig(pairs=str(pairs), output_dir=str(blocker / "out"), log_dir=str(tmp_path))
        run = train_reward.run_reward_training
    with pytest.raises(PermissionError, match=r"cannot write the output directory .*file/out"):
        run(cfg)
