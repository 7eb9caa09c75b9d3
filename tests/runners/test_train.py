"""runners.train end to end on tiny budgets: logs, checkpoints, resume, evaluation, errors."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runners import evaluate, train

V_STAR_5X5 = 93.6549  # value iteration, gamma 0.99, slip 0.2 (envs.catgrid MAPS["5x5"])
TINY = ["--total-timesteps", "1024", "--num-envs", "8", "--num-steps", "32", "--eval-episodes", "16",
        "--no-progress", "--threads", "1", "--d-model", "32", "--n-layer", "1"]


def scalar_tags(run_dir) -> set[str]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return set(acc.Tags()["scalars"]), acc


def test_train_logs_checkpoints_and_resumes(tmp_path):
    result = train.main(["--env", "CatGrid-v0", "--algo", "ppo", "--log-dir", str(tmp_path), "--run-name", "r", *TINY])
    run = tmp_path / "r"
    assert result["global_step"] == 1024
    tags, acc = scalar_tags(run)
    for tag in ("charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/policy_loss",
                "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
                "losses/explained_variance"):
        assert tag in tags, tag
    assert not any(t.startswith("eval/") for t in tags)  # single points: the final evaluation is a text table
    assert {"eval/episode_0", "eval/episode_2"} <= set(acc.Tags()["images"])
    assert {"config/text_summary", "eval/final/text_summary"} <= set(acc.Tags()["tensors"])
    table = acc.Tensors("eval/final/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|greedy|" in table and "|sampled|" in table and "|v_star_start|93.65|" in table
    report = json.loads((run / "eval.json").read_text())
    assert report["v_star_start"] == pytest.approx(V_STAR_5X5, abs=1e-3)
    assert 0.0 <= report["greedy"]["success_rate"] <= 1.0 and report["greedy"]["episodes"] == 16
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["global_step"] == 1024 and state["num_updates"] == 4

    # resume to a larger budget: the step counter continues where the checkpoint stopped
    resumed = train.main(["--resume", str(run), "--total-timesteps", "2048", "--eval-episodes", "0", "--reset-schedule"])
    assert resumed["global_step"] == 2048
    assert json.loads((run / "checkpoint" / "state.json").read_text())["num_updates"] == 8

    # the evaluation command reads the checkpoint back
    ev = evaluate.main(evaluate.EvalArgs(checkpoint=run, episodes=8, num_envs=4))
    assert ev["greedy"]["episodes"] == 8 and ev["v_star_start"] == pytest.approx(V_STAR_5X5, abs=1e-3)


def test_bad_config_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown env"):
        train.preset("MountainCar-v0")
    with pytest.raises(ValueError, match="unknown algo"):
        train.parse_args(["--algo", "a2c"])
    with pytest.raises(SystemExit):  # tyro prints the config's own message with the usage
        train.parse_args(["--agent.learning-rate=-1"])
    assert "learning_rate must be >= 0" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        train.main(["--resume", str(tmp_path)])
    with pytest.raises(SystemExit):  # checked while parsing, before any work
        train.main(["--slip", "1.5", "--log-dir", str(tmp_path), *TINY])
    assert "slip must be in [0,1), got 1.5" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        train.TrainConfig.from_dict({"envv": "CatGrid-v0"})


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_train_through_sync_and_async_vector_envs(tmp_path, mode):
    result = train.main(["--vectorization-mode", mode, "--log-dir", str(tmp_path), "--run-name", mode, *TINY])
    assert result["global_step"] == 1024
    assert result["eval"]["v_star_start"] == pytest.approx(V_STAR_5X5, abs=1e-3)  # get_attr reaches the sub-envs
