"""Reproducible RLHF stages: step-based lengths, same command + seed -> bit-identical model files.

On CPU with the same torch version and thread count, SFT, reward-model and PPO runs are
deterministic; a wall-clock cap may only stop a run early (and say so), never change the
schedule of a run that finishes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from envs.imdb import load_imdb
from runners.sft import SFTConfig, run_sft
from runners.train import preset, train
from runners.train_reward import RewardConfig, run_reward_training


def _bytes(directory: Path, name: str = "model.safetensors") -> bytes:
    return (directory / name).read_bytes()


@pytest.fixture(scope="module")
def review_file(tmp_path_factory: pytest.TempPathFactory, imdb_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("det_data") / "reviews.jsonl"
    rows = load_imdb("train", source=imdb_dir, limit=300, seed=0)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


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
    other = run_sft(_sft(tiny_lm_dir, review_file, tmp_path / "d", seed=1))
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
    import runners.sft

    monkeypatch.setattr(runners.sft, "time", _Clock)
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

    a, b, capped = run("a"), run("b"), run("c", max_minutes=60.0)
    assert a["step"] == 6 and a["stopped_early"] is None
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b") == _bytes(tmp_path / "c")
    assert _bytes(tmp_path / "a") != _bytes(tmp_path / run("d", seed=1)["output_dir"].split("/")[-1])


def test_ppo_stage_same_seed_bit_identical(tmp_path: Path, tiny_lm, tiny_tokenizer) -> None:
    texts = [r["text"] for r in load_imdb("train", limit=200, seed=0)]

    def run(name: str, seed: int = 0) -> Path:
        cfg = preset("TextGen-IMDB-v0", "ppo")
        cfg.num_envs, cfg.num_steps, cfg.max_new_tokens_range, cfg.total_timesteps = 4, 5, (3, 4), 2 * 4 * 5
        cfg.min_new_tokens, cfg.agent.learning_rate = 2, 1e-3
        cfg.log_dir, cfg.run_name, cfg.threads, cfg.progress, cfg.seed = str(tmp_path), name, 1, False, seed
        train(cfg, env_overrides={"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": "vader",
                                  "dataset": texts, "device": "cpu"})
        return tmp_path / name / "checkpoint"

    a, b, c = run("a"), run("b"), run("c", seed=1)
    ta, tb, tc = (load_file(p / "model.safetensors") for p in (a, b, c))  # header order is a set's: compare tensors
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert not all(torch.equal(ta[k], tc[k]) for k in ta)
    # the exported policy (what a user takes away) is bit-identical, file for file; length controls on
    assert _bytes(a.parent / "policy") == _bytes(b.parent / "policy") != _bytes(c.parent / "policy")
    assert _bytes(a.parent, "value_head.safetensors") == _bytes(b.parent, "value_head.safetensors")
