"""Every command in README.md parses with the current CLI, and the cheap ones run as documented.

Expensive commands (full training budgets, the RLHF presets, multi-GPU torchrun) are parsed here with placeholders
filled in; CatGrid commands and the Python snippets run for real (train with a small budget appended). The RLHF
pipeline itself runs in tests/test_rlhf_pipeline.py (slow, CI).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = "runs/CatGrid-v0__ppo__0__123"


def readme_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def readme_commands() -> list[tuple[str, list[str]]]:
    """(module, args) of every ``python -m runners.X`` / ``torchrun ... -m runners.X`` in the README's bash blocks."""
    commands = []
    for block in readme_blocks("bash"):
        for line in block.replace("\\\n", " ").replace("runs/<run dir>", RUN).splitlines():
            for segment in line.split("&&"):
                words = shlex.split(segment, comments=True)
                if "-m" in words and words[words.index("-m") + 1].startswith("runners."):
                    i = words.index("-m")
                    commands.append((words[i + 1], words[i + 2:]))
    return commands


def fill(args: list[str], model_dir: Path) -> list[str]:
    out = []
    for a in args:
        a = a.replace("<time>", "123")
        out.append("vader" if a == "PATH|vader" else str(model_dir) if a == "PATH" else a)
    return out


def parse(module: str, args: list[str]):
    from runners import compare, evaluate, rlhf, sft, train, train_reward
    from runners.common import tiny_lm as lm_presets

    parsers = {
        "runners.train": train.parse_args, "runners.evaluate": evaluate.parse_args,
        "runners.compare": compare.parse_args, "runners.rlhf": rlhf.parse_args,
        "runners.sft": lambda a: lm_presets.cli_with_presets(sft.SFTConfig, sft.PRESETS, a, module=module),
        "runners.train_reward": lambda a: lm_presets.cli_with_presets(train_reward.RewardConfig, train_reward.PRESETS,
                                                                      a, module=module),
    }
    assert module in parsers, f"README documents {module}: add its parser to this test"
    return parsers[module](args)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _train_run(extra: list[str] = ()) -> dict:
    from runners import train

    return train.main(["--env", "CatGrid-v0", "--algo", "ppo", "--seed", "0", "--log-dir", "runs",
                       "--run-name", Path(RUN).name, "--total-timesteps", "4096", "--eval-episodes", "16",
                       "--no-progress", "--threads", "1", *extra])


def test_every_readme_command_parses(in_tmp, tiny_lm_dir, one_thread):
    commands = readme_commands()
    modules = {m for m, _ in commands}
    assert {"runners.train", "runners.evaluate", "runners.compare", "runners.sft", "runners.train_reward",
            "runners.rlhf"} <= modules
    _train_run()  # --resume and evaluate lines read a real run
    for module, args in commands:
        try:
            parse(module, fill(args, tiny_lm_dir))
        except SystemExit as e:
            pytest.fail(f"README command `python -m {module} {' '.join(args)}` does not parse (exit {e.code})")


def test_catgrid_commands_and_snippets_run_as_documented(in_tmp, capsys, one_thread):
    from runners import evaluate, train

    lines = {(m, tuple(a)) for m, a in readme_commands()}
    assert ("runners.evaluate", (RUN.replace("123", "<time>"), "--episodes", "500")) in lines
    assert ("runners.train", ("--resume", RUN.replace("123", "<time>"))) in lines
    _train_run()
    resumed = train.main(["--resume", RUN, "--total-timesteps", "8192", "--no-progress", "--reset-schedule"])
    assert resumed["global_step"] == 8192
    report = evaluate.main(evaluate.parse_args([RUN, "--episodes", "500"]))
    assert report["greedy"]["episodes"] == 500
    usage, load = readme_blocks("python")[:2]
    scope: dict = {}
    exec(usage, scope)  # gym.make / optimal_values / make_vec of the Usage section
    assert scope["V"].shape == (64,) and scope["vec"].num_envs == 1024
    scope = {"obs": np.array([0, 0])}
    exec(load.replace("<time>", "123"), scope)  # load_agent + predict
    assert isinstance(scope["action"], int) and 0 <= scope["action"] < 4


def test_offline_text_snippet_runs(in_tmp, tiny_lm_dir, imdb_dir):
    import json

    snippet = next(b for b in readme_blocks("python") if "text_field=" in b)
    rows = [{"review": f"a review number {i} that is long enough", "stars": 3} for i in range(8)]
    Path("reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scope: dict = {}
    exec("import gymnasium as gym\nimport envs\n" + snippet.replace("artifacts/rlhf-tiny/sft", str(tiny_lm_dir)), scope)
    obs, _ = scope["env"].reset(seed=0)
    assert obs["attention_mask"].sum() >= 2
