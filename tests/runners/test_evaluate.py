"""runners.evaluate: the run directory as a positional argument; CatGrid next to V*(start), text runs on held-out
prompts."""

from __future__ import annotations

import json

import pytest

from runners import evaluate, train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--total-timesteps", "512", "--num-envs", "8", "--num-steps", "32", "--eval-episodes", "0",
        "--no-progress", "--threads", "1", "--d-model", "32", "--n-layer", "1"]


def test_evaluate_takes_the_run_dir_positionally(tmp_path, capsys, one_thread):
    train.main(["--log-dir", str(tmp_path), "--run-name", "r", *TINY])
    report = evaluate.main(evaluate.parse_args([str(tmp_path / "r"), "--episodes", "8", "--num-envs", "4"]))
    assert report["greedy"]["episodes"] == 8 and report["v_star_start"] == pytest.approx(93.6549, abs=1e-3)
    assert "V*(start)" in capsys.readouterr().out


def test_evaluate_cli_on_a_text_run_dir(tiny_lm_dir, tmp_path, capsys) -> None:
    from runners.evaluate import main as evaluate_main
    from runners.evaluate import parse_args
    from runners.train import main as train_main

    result = train_main(["--env", "TextGen-IMDB-v0", "--model", str(tiny_lm_dir), "--reward-model", "vader",
                         "--num-envs", "4", "--num-steps", "5", "--max-new-tokens", "4", "--min-new-tokens", "2",
                         "--total-timesteps", "20", "--device", "cpu", "--threads", "1", "--no-progress",
                         "--log-dir", str(tmp_path), "--run-name", "text"])
    run_dir = result["run_dir"]
    report = evaluate_main(parse_args([run_dir, "--episodes", "16", "--device", "cpu"]))
    out = capsys.readouterr().out
    assert "mean score" in out and "distinct-1" in out and "| prompt | response |" in out
    saved = json.loads((tmp_path / "text" / "eval_text_test.json").read_text())
    assert saved["episodes"] == 16 and saved["split"] == "test" and saved["score_mean"] == report["score_mean"]
    assert 3 <= saved["tokens_mean"] <= 4  # min_new_tokens=2 from the run's config: EOS never before the third
