"""Daily use of the runners: --help text, run directories, progress output, evaluate RUN_DIR, one-call load."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from agents.agent import Agent
from runners import compare, evaluate, load_agent, rlhf, sft, train, train_reward
from runners.common import run_dir as runs

TINY = ["--total-timesteps", "512", "--num-envs", "8", "--num-steps", "32", "--eval-episodes", "0",
        "--no-progress", "--threads", "1", "--d-model", "32", "--n-layer", "1"]
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


def test_train_parses_algo_into_the_agent_config():
    cfg = train.parse_args(["--algo", "reinforce"])
    assert cfg.algo == cfg.agent.algo == "reinforce"


def test_run_name_collision_is_refused_and_default_names_never_collide(tmp_path, one_thread):
    train.main(["--log-dir", str(tmp_path), "--run-name", "r", *TINY])
    events = sorted(p.name for p in (tmp_path / "r").glob("events.*"))
    with pytest.raises(FileExistsError, match="--resume"):
        train.main(["--log-dir", str(tmp_path), "--run-name", "r", *TINY])
    assert sorted(p.name for p in (tmp_path / "r").glob("events.*")) == events  # nothing appended
    first = runs.new_run_dir(tmp_path, None, "r")
    assert first == tmp_path / "r_1" and first.is_dir()  # claimed at once, still empty
    assert runs.new_run_dir(tmp_path, None, "r") == tmp_path / "r_2"  # a run started in the same second


def test_a_bad_log_dir_is_a_clear_error_not_an_endless_search(tmp_path):
    (tmp_path / "file").write_text("")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing" / "target")
    for bad in (tmp_path / "file", tmp_path / "dangling"):
        with pytest.raises(PermissionError, match="--log-dir"):
            runs.new_run_dir(bad, None, "r")


def test_compare_refuses_an_existing_comparison_before_training(tmp_path):
    (tmp_path / "cmp" / "CatGrid-v0__ppo__0").mkdir(parents=True)
    (tmp_path / "cmp" / "CatGrid-v0__ppo__0" / "events.out").write_text("")
    with pytest.raises(FileExistsError, match="another --name"):
        compare.main(compare.CompareConfig(seeds=[0], log_dir=str(tmp_path), name="cmp", jobs=1, plot=False))
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["CatGrid-v0__ppo__0"]


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


def test_evaluate_takes_the_run_dir_positionally(tmp_path, capsys, one_thread):
    train.main(["--log-dir", str(tmp_path), "--run-name", "r", *TINY])
    report = evaluate.main(evaluate.parse_args([str(tmp_path / "r"), "--episodes", "8", "--num-envs", "4"]))
    assert report["greedy"]["episodes"] == 8 and report["v_star_start"] == pytest.approx(93.6549, abs=1e-3)
    assert "V*(start)" in capsys.readouterr().out


def test_agent_load_and_predict_like_sb3(tmp_path, one_thread):
    result = train.main(["--log-dir", str(tmp_path), "--run-name", "r", *TINY])
    trained: Agent = result["agent"]
    agent = load_agent(tmp_path / "r", device="cpu")
    for a, b in zip(agent.net.state_dict().values(), trained.net.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    obs = np.array([[0, 0], [1, 2], [3, 4]])
    actions, state = agent.predict(obs, deterministic=True)
    assert state is None and actions.shape == (3,)
    expected = trained.policy_step(obs, np.ones(3, dtype=bool))[0].argmax(-1).cpu().numpy()
    np.testing.assert_array_equal(actions, expected)
    single, _ = agent.predict(obs[1])
    assert isinstance(single, int) and single == expected[1]
    only_left = np.array([False, False, True, False])
    assert agent.predict(obs[1], action_mask=only_left)[0] == 2


def test_in_memory_objects_are_recorded_and_reload_asks_for_them(tmp_path, tiny_lm, tiny_tokenizer, tiny_lm_dir,
                                                                 imdb_dir, one_thread):
    def positive(texts):
        return [float(t.count("good")) for t in texts]

    cfg = train.preset("TextGen-IMDB-v0", "ppo")
    cfg.log_dir, cfg.run_name, cfg.progress, cfg.threads = str(tmp_path), "text", False, 1
    cfg.num_envs, cfg.num_steps, cfg.max_new_tokens, cfg.total_timesteps = 4, 4, 3, 16
    cfg.agent.num_minibatches, cfg.agent.update_epochs = 1, 1
    train.train(cfg, env_overrides={"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": positive})
    saved = json.loads((tmp_path / "text" / "checkpoint" / "state.json").read_text())["config"]
    assert saved["model"] == "<in-memory object: GPT2LMHeadModel>"
    assert saved["reward_model"] == "<in-memory object: positive>"
    with pytest.raises(ValueError, match=r"--model PATH.*--reward-model PATH"):
        evaluate.main(evaluate.parse_args([str(tmp_path / "text"), "--episodes", "4"]))
    with pytest.raises(ValueError, match="--model PATH"):
        train.main(["--resume", str(tmp_path / "text"), "--total-timesteps", "32"])
    agent = load_agent(tmp_path / "text", device="cpu", model=str(tiny_lm_dir), reward_model="vader")
    obs = {"input_ids": np.full((2, 11), 5), "attention_mask": np.ones((2, 11))}
    actions, _ = agent.predict(obs)
    assert actions.shape == (2,) and (actions >= 0).all()


def test_runners_silence_transformers_loading_bars(tmp_path, tiny_lm_dir, capsys, one_thread):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a fresh process
    train.main(["--env", "TextGen-IMDB-v0", "--model", str(tiny_lm_dir), "--reward-model", "vader", "--num-envs", "2",
                "--num-steps", "3", "--max-new-tokens", "2", "--total-timesteps", "6", "--device", "cpu",
                "--threads", "1", "--log-dir", str(tmp_path), "--run-name", "t"])
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "run directory:" in err
