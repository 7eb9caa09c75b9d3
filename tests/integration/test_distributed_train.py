"""runners.train under torchrun (2 CPU processes, gloo): one log, global steps, resume, failures, learning."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.dist_harness import run_ranks

TINY = ["--num-envs", "8", "--num-steps", "32", "--no-progress", "--threads", "1", "--d-model", "32", "--n-layer", "1"]


def torchrun(args: list[str], nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node nproc -m runners.train args`` with one thread per rank."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "runners.train", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def scalar_steps(run_dir: Path, tag: str) -> list[int]:
    """Steps of ``tag`` over every event file of the run (each launch writes one file)."""
    steps = []
    for f in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars(tag)]
    return steps


def test_two_process_run_logs_once_counts_global_steps_and_resumes(tmp_path):
    from runners import train

    run = tmp_path / "ddp"
    out = torchrun(["--env", "CatGrid-v0", "--total-timesteps", "2048", "--eval-episodes", "16", *TINY,
                    "--log-dir", str(tmp_path), "--run-name", "ddp"])
    assert out.stdout.count("greedy: discounted return") == 1  # evaluation on rank 0 only
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0 alone writes TensorBoard
    # 2 ranks x 8 envs x 32 steps = 512 steps per update, 4 updates for 2048 steps in total
    assert scalar_steps(run, "charts/SPS") == [512, 1024, 1536, 2048]
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert (state["global_step"], state["num_updates"], state["world_size"]) == (2048, 4, 2)
    assert json.loads((run / "eval.json").read_text())["greedy"]["episodes"] == 16

    torchrun(["--resume", str(run), "--total-timesteps", "4096", "--eval-episodes", "0", "--reset-schedule"])
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert (state["global_step"], state["num_updates"]) == (4096, 8)
    assert scalar_steps(run, "charts/SPS") == [512 * k for k in range(1, 9)]  # no step logged twice

    with pytest.raises(ValueError, match="trained by 2 process"):  # one process cannot continue it faithfully
        train.main(["--resume", str(run), "--total-timesteps", "8192"])


def _train_with_failing_reward(rank: int, lm_dir: str, log_dir: str) -> str:
    from runners.train import preset, train

    calls = {"n": 0}

    def reward(texts: list[str]) -> list[float]:
        calls["n"] += 1
        if rank == 1 and calls["n"] == 3:
            raise ValueError("reward model crashed on rank 1")
        return [float(len(t)) / 100 for t in texts]

    cfg = dataclasses.replace(preset("TextGen-IMDB-v0", "ppo"), num_envs=4, num_steps=5, max_new_tokens=4,
                              total_timesteps=4 * 5 * 2 * 10, model=lm_dir, log_dir=log_dir, run_name="fail",
                              progress=False, device="cpu")
    try:
        train(cfg, env_overrides={"reward_model": reward, "dataset": ["a b c d e f g h"] * 64})
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return "finished"


def test_a_failing_reward_on_one_rank_stops_the_whole_job(tiny_lm_dir, tmp_path):
    r0, r1 = run_ranks(_train_with_failing_reward, args=(str(tiny_lm_dir), str(tmp_path)), timeout_s=240)
    assert "reward model crashed on rank 1" in r1
    assert r0.startswith("PeerFailure: rank 1 failed during the rollout"), r0


def test_two_process_text_run_completes(tiny_lm_dir, tmp_path):
    torchrun(["--env", "TextGen-IMDB-v0", "--model", str(tiny_lm_dir), "--reward-model", "vader",
              "--num-envs", "4", "--num-steps", "5", "--max-new-tokens", "4", "--total-timesteps", "80",
              "--sample-every", "1", "--device", "cpu", "--threads", "1", "--no-progress",
              "--kl-coef", "0.2", "--kl-target", "6", "--kl-horizon", "100",
              "--log-dir", str(tmp_path), "--run-name", "text"])
    run = tmp_path / "text"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert scalar_steps(run, "objective/scores") == [40, 80]  # 2 ranks x 4 envs x 5 steps per update
    assert len(scalar_steps(run, "objective/kl_coef")) == 2
    # the KL controller saw the episodes of BOTH ranks: after the first rollout (KL 0: the policy is its
    # reference) β = 0.2 (1 - 0.2 n / 100) with n >= 8 episodes (2 ranks x 4 envs); rank 0's alone: n = 4
    acc = EventAccumulator(str(next(run.glob("events.out.tfevents.*"))))
    acc.Reload()
    assert acc.Scalars("objective/kl_coef")[0].value <= 0.2 * (1 - 0.2 * 8 / 100) + 1e-6
    assert json.loads((run / "checkpoint" / "state.json").read_text())["world_size"] == 2
    from safetensors.torch import load_file

    from runners.common.export import load_policy

    exported = load_policy(run).state_dict()  # rank 0 exported the policy it trained, once
    trained = load_file(str(run / "checkpoint" / "model.safetensors"))
    shared = [k for k in trained if k in exported]
    assert len(shared) > 10 and all(torch.equal(trained[k], exported[k]) for k in shared)
    assert shared and all(torch.equal(trained[k], exported[k]) for k in shared)


@pytest.mark.slow
def test_two_process_catgrid_ppo_reaches_99_percent_of_optimum(tmp_path):
    """The 5x5 acceptance of tests/test_learning_catgrid.py, data-parallel: 2 ranks x 32 envs = the preset's 64."""
    torchrun(["--env", "CatGrid-v0", "--num-envs", "32", "--seed", "0", "--threads", "1", "--no-progress",
              "--log-dir", str(tmp_path), "--run-name", "ddp"], timeout=1500)
    run = tmp_path / "ddp"
    ev = json.loads((run / "eval.json").read_text())
    assert ev["greedy"]["ratio_to_v_star"] >= 0.99, ev
    assert ev["greedy"]["success_rate"] >= 0.95, ev
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    steps = scalar_steps(run, "charts/episodic_return")
    # logged once per update, by one rank: 73 updates of 2 x 32 x 64 = 4096 steps
    assert steps == [4096 * k for k in range(1, 300_000 // 4096 + 1)]
