"""runners.common.run_loop: the progress bar, resuming a finished run, and a bit-identical text PPO stage."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors.torch import load_file

from envs.imdb import load_imdb
from runners import train
from runners.train import preset

TINY = ["--total-timesteps", "512", "--num-envs", "8", "--num-steps", "32", "--eval-episodes", "0",
        "--no-progress", "--threads", "1", "--d-model", "32", "--n-layer", "1"]


def _bytes(directory: Path, name: str = "model.safetensors") -> bytes:
    return (directory / name).read_bytes()


def test_resuming_a_finished_run_says_so_and_writes_nothing(tmp_path, capsys, one_thread):
    train.main(["--log-dir", str(tmp_path), "--run-name", "r", *TINY])
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*")}
    out = train.main(["--resume", str(tmp_path / "r")])
    assert out["finished"] is True and out["global_step"] == 512
    assert "already finished" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*")} == before


def test_progress_bar_counts_env_steps_and_names_the_run_dir(tmp_path, capsys, one_thread):
    args = [a for a in TINY if a != "--no-progress"]
    train.main(["--log-dir", str(tmp_path), "--run-name", "p", *args])
    err = capsys.readouterr().err
    assert f"run directory: {tmp_path / 'p'}" in err
    assert "512/512" in err and "step/s" in err  # env steps, not updates


def test_ppo_stage_same_seed_bit_identical(tmp_path: Path, tiny_lm, tiny_tokenizer) -> None:
    texts = [r["text"] for r in load_imdb("train", limit=200, seed=0)]

    def run(name: str, seed: int = 0) -> Path:
        cfg = preset("TextGen-IMDB-v0", "ppo")
        cfg = dataclasses.replace(cfg, num_envs=4, num_steps=5, max_new_tokens_range=(3, 4), total_timesteps=2 * 4 * 5,
                                  min_new_tokens=2, agent=dataclasses.replace(cfg.agent, learning_rate=1e-3),
                                  log_dir=str(tmp_path), run_name=name, threads=1, progress=False, seed=seed)
        train.train(cfg, env_overrides={"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": "vader",
                                  "dataset": texts, "device": "cpu"})
        return tmp_path / name / "checkpoint"

    a, b, c = run("a"), run("b"), run("c", seed=1)
    ta, tb, tc = (load_file(p / "model.safetensors") for p in (a, b, c))  # header order is a set's: compare tensors
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert not all(torch.equal(ta[k], tc[k]) for k in ta)
    # the exported policy (what a user takes away) is bit-identical, file for file; length controls on
    assert _bytes(a.parent / "policy") == _bytes(b.parent / "policy") != _bytes(c.parent / "policy")
    assert _bytes(a.parent, "value_head.safetensors") == _bytes(b.parent, "value_head.safetensors")


def test_text_run_ends_with_held_out_text_metrics(tmp_path: Path, tiny_lm, tiny_tokenizer, capsys, one_thread):
    """With --eval-episodes N a text run ends as runners.evaluate does (score ± s.e., KL, length, distinct-n), not
    with CatGrid's greedy-return report."""
    import json

    texts = [r["text"] for r in load_imdb("train", limit=200, seed=0)]
    cfg = preset("TextGen-IMDB-v0", "ppo")
    assert cfg.eval_episodes == 0  # text presets do not evaluate unless asked (docs/textgen.md)
    cfg = dataclasses.replace(cfg, num_envs=4, num_steps=4, max_new_tokens=4, total_timesteps=16, eval_episodes=6,
                              log_dir=str(tmp_path), run_name="text", threads=1, progress=False)
    result = train.train(cfg, env_overrides={"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": "vader",
                                             "dataset": texts, "device": "cpu"})
    report = json.loads((tmp_path / "text" / "eval.json").read_text())
    assert report["episodes"] == 6 == len(report["samples"]) and report["split"] == "test"
    assert report["score_mean"] == result["eval"]["score_mean"] and report["tokens_mean"] <= 4
    assert report["score_mean"] == sum(s["score"] for s in report["samples"]) / 6
    out = capsys.readouterr().out
    assert "Held-out prompts: 6" in out and "greedy" not in out
