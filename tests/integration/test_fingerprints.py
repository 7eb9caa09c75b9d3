"""Same command and seed, same result: three short runs and a run directory written by an older version.

The fingerprints in ``fingerprints.json`` were recorded by ``fingerprint.py`` before the architecture
restructuring (commit 30be65b); ``tests/fixtures/catgrid_ppo_v0_1`` is a CatGrid PPO run of that version
stopped at update 4 of 8. Bit identity on one machine is checked by the script (SHA-256 of the weights);
here the final statistics and the sum of the weights must agree to 1e-5 relative, which any change to what
the code computes breaks while a CPU with other vector units still passes.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fingerprint  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "catgrid_ppo_v0_1"


def _close(got: dict, want: dict) -> None:
    for key, value in want.items():
        if key != "sha256":
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


@pytest.mark.parametrize("name", ["catgrid_ppo", "catgrid_reinforce"])
def test_catgrid_runs_match_the_recorded_fingerprints(name, tmp_path, one_thread):
    want = json.loads(fingerprint.RECORD.read_text())[name]
    _close(fingerprint.catgrid(name.split("_")[1], tmp_path), want)


def test_text_grpo_run_matches_the_recorded_fingerprint(imdb_dir, tmp_path, one_thread):
    want = json.loads(fingerprint.RECORD.read_text())["text_grpo"]
    _close(fingerprint.text_grpo(tmp_path), want)


def test_old_run_directory_still_evaluates_and_resumes(tmp_path, one_thread):
    from runners.evaluate import main as evaluate_main
    from runners.evaluate import parse_args as evaluate_args
    from runners.train import parse_args, train

    run = tmp_path / FIXTURE.name
    shutil.copytree(FIXTURE, run, symlinks=True)
    report = evaluate_main(evaluate_args([str(run), "--episodes", "16", "--device", "cpu"]))
    assert report["greedy"]["discounted_return"] == pytest.approx(0.0, abs=1e-9)
    assert report["sampled"]["discounted_return"] == pytest.approx(2.1321258334458104, rel=1e-5)
    result = train(parse_args(["--resume", str(run), "--no-progress", "--threads", "1"]))
    assert result["global_step"] == 1024
    sha, total = fingerprint._digest(result["agent"].net)
    assert total == pytest.approx(47.71693564908305, rel=1e-5)
    assert result["eval"]["sampled"]["discounted_return"] == pytest.approx(-8.75967481603376, rel=1e-5)
    assert (run / "eval.json").is_file()
