"""runners.common.cli: --help of every runner (plain text, python -m usage), --preset defaults, quiet loading bars."""

from __future__ import annotations

import re

import pytest

from runners import compare, evaluate, rlhf, sft, train, train_reward

HELP = {
    "runners.train": lambda: train.parse_args(["--help"]),
    "runners.evaluate": lambda: evaluate.parse_args(["--help"]),
    "runners.compare": lambda: compare.parse_args(["--help"]),
    "runners.rlhf": lambda: rlhf.parse_args(["--help"]),
    "runners.sft": lambda: sft.main(["--help"]),
    "runners.train_reward": lambda: train_reward.main(["--help"]),
}


@pytest.mark.parametrize("module", sorted(HELP))
def test_help_is_plain_text_with_python_m_usage(module, capsys):
    with pytest.raises(SystemExit) as exit_:
        HELP[module]()
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m {module} "), text.splitlines()[0]
    description = text.split("options")[0].splitlines()[1:-1]
    assert any(line.strip() for line in description), f"{module} --help has no description"
    for markup in ("``", ":func:", ":class:", ":meth:", "::\n"):
        assert markup not in text, f"{module} --help shows {markup!r}"
    assert not re.search(r"--- \w", text), f"{module} --help shows a source comment"
    if module == "runners.train":
        assert re.search(r"--algo \{", text) and "--agent.algo" not in text  # one --algo


def test_runners_silence_transformers_loading_bars(tmp_path, tiny_lm_dir, capsys, one_thread):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a fresh process
    train.main(["--env", "TextGen-IMDB-v0", "--model", str(tiny_lm_dir), "--reward-model", "vader", "--num-envs", "2",
                "--num-steps", "3", "--max-new-tokens", "2", "--total-timesteps", "6", "--device", "cpu",
                "--threads", "1", "--log-dir", str(tmp_path), "--run-name", "t"])
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "run directory:" in err
