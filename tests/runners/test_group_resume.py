"""Exact resume of RLOO and GRPO: updates with nothing to learn still count, and the groups waiting in the carry
(finished episodes whose mates still run) are saved and restored."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from runners import train
from runners.common.checkpoint import read_state

ARGS = ["--total-timesteps", "256", "--num-envs", "8", "--num-steps", "2", "--eval-episodes", "0", "--no-progress",
        "--threads", "1", "--d-model", "16", "--n-layer", "1", "--checkpoint-every", "1", "--keep-checkpoints", "1",
        "--group-size", "4"]


@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_group_stop_and_resume_with_skipped_updates_matches_a_straight_run(algo, tmp_path, one_thread):
    """2-step rollouts: the first updates have no finished group (skipped), later ones learn; 16 updates either way."""
    args = [*ARGS, "--algo", algo, "--log-dir", str(tmp_path)]
    straight = train.main([*args, "--run-name", "straight"])
    assert straight["agent"].num_updates == 16 and straight["global_step"] == 256
    train.main([*args, "--run-name", "split", "--stop-at-update", "4"])
    assert read_state(tmp_path / "split")["num_updates"] == 4
    at_stop = load_file(str(tmp_path / "split" / "checkpoint" / "model.safetensors"))
    resumed = train.main(["--resume", str(tmp_path / "split")])
    assert resumed["global_step"] == 256 and resumed["agent"].num_updates == 16
    a, b = (load_file(str(tmp_path / r / "checkpoint" / "model.safetensors")) for r in ("straight", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], at_stop[k]) for k in a)  # the later updates learned
