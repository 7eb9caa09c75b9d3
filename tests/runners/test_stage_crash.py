"""SFT and reward-model stages: a kill at any step of a save, then --resume, ends like an
uninterrupted run; an unwritable output dir fails before any training."""

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
from runners.common.atomic import CRASH_ENV, CRASH_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]
HF_SAVE_STEPS = ["hf_files_written", "hf_synced", "hf_moved_aside", "hf_renamed", "hf_cleaned"]


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
    state = torch.load(tmp_path / "rm" / sft.STATE_FILE, weights_only=True)
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
