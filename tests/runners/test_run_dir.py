"""runners.common.run_dir: a new run never appends to an old one; in-memory objects are recorded as such."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from runners import evaluate, load_agent, train
from runners.common import run_dir as runs

TINY = ["--total-timesteps", "512", "--num-envs", "8", "--num-steps", "32", "--eval-episodes", "0",
        "--no-progress", "--threads", "1", "--d-model", "32", "--n-layer", "1"]


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


def test_in_memory_objects_are_recorded_and_reload_asks_for_them(tmp_path, tiny_lm, tiny_tokenizer, tiny_lm_dir,
                                                                 imdb_dir, one_thread):
    def positive(texts):
        return [float(t.count("good")) for t in texts]

    cfg = train.preset("TextGen-IMDB-v0", "ppo")
    cfg = dataclasses.replace(cfg, log_dir=str(tmp_path), run_name="text", progress=False, threads=1, num_envs=4,
                              num_steps=4, max_new_tokens=3, total_timesteps=16,
                              agent=dataclasses.replace(cfg.agent, num_minibatches=1, update_epochs=1))
    train.train(cfg, env_overrides={"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": positive})
    saved = json.loads((tmp_path / "text" / "checkpoint" / "state.json").read_text())["config"]
    assert saved["model"] == "<in-memory object: GPT2LMHeadModel>"
    assert saved["reward_model"] == "<in-memory object: positive>"
    with pytest.raises(ValueError, match=r"--model PATH.*--reward-model PATH"):
        evaluate.main(evaluate.parse_args([str(tmp_path / "text"), "--episodes", "4"]))
    with pytest.raises(ValueError, match="--model PATH"):
        train.main(["--resume", str(tmp_path / "text"), "--total-timesteps", "32"])
    resumed = train.main(["--resume", str(tmp_path / "text"), "--total-timesteps", "32", "--model", str(tiny_lm_dir),
                          "--reward-model", "vader"])  # passing them again is no option change
    assert resumed["global_step"] == 32
    agent = load_agent(tmp_path / "text", device="cpu", model=str(tiny_lm_dir), reward_model="vader")
    obs = {"input_ids": np.full((2, 11), 5), "attention_mask": np.ones((2, 11))}
    actions, _ = agent.predict(obs)
    assert actions.shape == (2,) and (actions >= 0).all()
