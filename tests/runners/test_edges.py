"""Nothing lost at the edges of a run: claimed run names, options refused on resume, checkpoints that are
hostile or wrong in ways the manifest cannot see, a diverging run, a full disk, bad seeds, devices and ranks.
Each test plants one fault and checks the error names its cause and its fix (and that nothing was lost)."""

from __future__ import annotations

import dataclasses
import errno
import inspect
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.tensorboard import SummaryWriter

from agents.agent import Agent
from runners import evaluate, load_agent, train
from runners.common import checkpoint, distributed, run_loop
from runners.common import run_dir as runs
from runners.common.atomic import CorruptCheckpointError, write_manifest
from runners.common.checkpoint import load_checkpoint, read_state, save_checkpoint
from runners.common.run_loop import NonFiniteError

TINY = ["--total-timesteps", "256", "--num-envs", "8", "--num-steps", "16", "--eval-episodes", "0", "--no-progress",
        "--threads", "1", "--d-model", "32", "--n-layer", "1", "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory) -> Path:
    """A finished 2-update CatGrid run (checkpoint-000001 and -000002)."""
    out = tmp_path_factory.mktemp("edges")
    train.main([*TINY, "--log-dir", str(out), "--run-name", "r"])
    return out / "r"


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, symlinks=True)
    return dest


def agent_for(run: Path):
    cfg = train.TrainConfig.from_dict(read_state(run)["config"])
    envs = train.make_envs(cfg, num_envs=1)
    agent = train.build_agent(cfg, envs, total_updates=2)
    envs.close()
    return agent


# item 2: an explicit --run-name is claimed as atomically as a default one
def test_concurrent_runs_with_one_name_get_one_directory_and_clear_refusals(tmp_path):
    outcomes: list[str] = []

    def start() -> None:
        try:
            outcomes.append(str(runs.new_run_dir(tmp_path, "same", "unused")))
        except FileExistsError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(str(tmp_path / "same")) == 1
    refusals = [o for o in outcomes if o != str(tmp_path / "same")]
    assert len(refusals) == 7 and all("already exists" in r and "--run-name" in r for r in refusals)


# item 3: options --resume may not change are refused, all of them in one message
def test_resume_refuses_changed_options_listing_saved_and_new_values(grid_run, tmp_path, one_thread):
    run = copy_run(grid_run, tmp_path / "r")
    before = read_state(run)
    with pytest.raises(ValueError) as err:
        train.main(["--resume", str(run), "--algo", "reinforce", "--seed", "1", "--slip", "0.1", "--map-name",
                    "8x8", "--d-model", "64", "--num-envs", "4", "--agent.learning-rate", "0.1"])
    msg = str(err.value)
    for part in ("--algo: saved 'ppo', given 'reinforce'", "--seed: saved 0, given 1", "--slip: saved 0.2, given 0.1",
                 "--map-name: saved '5x5', given '8x8'", "--d-model: saved 32, given 64",
                 "--num-envs: saved 8, given 4", "--agent.learning-rate: saved 0.00025, given 0.1",
                 "--total-timesteps"):  # the list of what may change
        assert part in msg, part
    with pytest.raises(ValueError, match="--env: saved 'CatGrid-v0', given 'TextGen-IMDB-v0'"):
        train.main(["--resume", str(run), "--env", "TextGen-IMDB-v0"])
    assert read_state(run) == before  # nothing saved into the run


def test_a_new_option_missing_from_an_old_checkpoint_counts_with_its_default():
    saved = {"seed": 0, "agent": {"algo": "ppo"}}
    defaults = {"seed": 0, "group_size": 1, "agent": {"algo": "ppo", "gamma": 0.99}}
    assert runs.changed_options({"seed": 0, "group_size": 1, "agent": {"algo": "ppo", "gamma": 0.99}}, saved,
                                defaults) == []
    assert runs.changed_options({"seed": 0, "group_size": 4, "agent": {"algo": "ppo", "gamma": 0.9}}, saved,
                                defaults) == [("group_size", 1, 4), ("agent.gamma", 0.99, 0.9)]
    assert runs.changed_options({"total_timesteps": 9, "eval_episodes": 0}, {"total_timesteps": 1}, {}) == []
    in_memory = {"model": "<in-memory object: GPT2LMHeadModel>", "slip": 0.2}  # passed again as --model PATH
    assert runs.changed_options({"model": "artifacts/sft", "slip": 0.2}, in_memory, {}) == []
    assert runs.changed_options({"model": "a", "slip": 0.2}, {"model": "b", "slip": 0.2}, {}) == [("model", "b", "a")]


# item 4: optimizer moments that do not fit the parameters
def test_an_optimizer_state_of_the_wrong_shape_is_refused(grid_run, tmp_path):
    run = copy_run(grid_run, tmp_path / "r")
    ckpt = (run / "checkpoint").resolve()
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    opt["state"][0]["exp_avg"] = torch.zeros(1)
    torch.save(opt, ckpt / "optimizer.pt")
    write_manifest(ckpt)  # re-hashed: only the content check can see it
    with pytest.raises(CorruptCheckpointError, match=r"exp_avg of parameter 0 is \(1,\) torch.float32, the "
                                                     r"parameter is \("):
        load_checkpoint(run, agent_for(run))


# item 5: a checkpoint link leaving its run directory
def test_a_checkpoint_link_pointing_outside_the_run_is_not_followed(grid_run, tmp_path):
    other = copy_run(grid_run, tmp_path / "other")
    run = copy_run(grid_run, tmp_path / "r")
    for version in run.glob("checkpoint-*"):
        shutil.rmtree(version)
    (run / "checkpoint").unlink()
    (run / "checkpoint").symlink_to((other / "checkpoint-000002").resolve())
    for load in (lambda: load_agent(run, device="cpu"), lambda: evaluate.main(evaluate.parse_args([str(run)])),
                 lambda: train.main(["--resume", str(run), "--total-timesteps", "512"])):
        with pytest.raises(CorruptCheckpointError, match="points outside its run directory"):
            load()


# item 6: a run name is one path component inside the log directory
@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", ".", "..", "a/b", ""])
def test_a_run_name_must_be_one_directory_name(name, tmp_path):
    with pytest.raises(ValueError, match="run_name must be one directory name inside --log-dir"):
        dataclasses.replace(train.TrainConfig(), run_name=name)
    with pytest.raises(ValueError, match="one directory name"):
        runs.new_run_dir(tmp_path, name, "default")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_log_dir_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"log_dir must not be empty \(use --log-dir \."):
        dataclasses.replace(train.TrainConfig(), log_dir="")
    with pytest.raises(ValueError, match="--log-dir must not be empty"):
        runs.new_run_dir("", "r", "default")


# item 7: divergence and garbage weights
def test_a_diverging_run_stops_naming_the_update_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch,
                                                                                   one_thread):
    with pytest.raises(NonFiniteError, match=r"non-finite values at update 1 .*NaN or inf.*no checkpoint was "
                                             r"written yet.*lower --agent.learning-rate"):
        train.main([*TINY, "--log-dir", str(tmp_path), "--run-name", "lr", "--agent.learning-rate", "1e6"])
    original, calls = Agent.update, []

    def update_then_nan(agent, rollout):  # the second update's gradients blow up
        stats = original(agent, rollout)
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                next(agent.net.parameters()).fill_(float("inf"))
        return stats

    monkeypatch.setattr(Agent, "update", update_then_nan)
    with pytest.raises(NonFiniteError, match=r"at update 2 .*the last good checkpoint .*checkpoint-000001 is kept"):
        train.main([*TINY, "--log-dir", str(tmp_path), "--run-name", "r"])
    assert read_state(tmp_path / "r")["num_updates"] == 1
    weights = load_file(str(tmp_path / "r" / "checkpoint" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_nan_weights_in_a_checkpoint_are_named(grid_run, tmp_path):
    run = copy_run(grid_run, tmp_path / "r")
    ckpt = (run / "checkpoint").resolve()
    weights = load_file(str(ckpt / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(ckpt / "model.safetensors"))
    write_manifest(ckpt)
    with pytest.raises(CorruptCheckpointError, match=r"holds non-finite weights .*NaN or inf.*checkpoint-000001"):
        load_agent(run, device="cpu")


# item 8: valid hashes, wrong structure
@pytest.mark.parametrize(("field", "value", "match"), [
    ("global_step", "12", "field 'global_step' must be an integer >= 0, got '12'"),
    ("num_updates", None, "field 'num_updates' must be an integer >= 0"),
    ("config", [], "field 'config' must be an object"),
    ("lr_schedule", {"total_updates": 2, "start_update": 0}, "field 'lr_schedule.start_fraction' must be a"),
])
def test_a_state_json_with_a_wrong_field_is_named(field, value, match, grid_run, tmp_path):
    run = copy_run(grid_run, tmp_path / "r")
    ckpt = (run / "checkpoint").resolve()
    state = json.loads((ckpt / "state.json").read_text())
    state[field] = value
    (ckpt / "state.json").write_text(json.dumps(state))
    write_manifest(ckpt)
    with pytest.raises(CorruptCheckpointError, match=rf"state\.json: {match}"):
        read_state(run)


def test_a_resume_pt_with_a_wrong_field_is_named(grid_run, tmp_path):
    run = copy_run(grid_run, tmp_path / "r")
    ckpt = (run / "checkpoint").resolve()
    state = torch.load(ckpt / "resume.pt", weights_only=True)
    state["rngs"]["torch"] = 7
    torch.save(state, ckpt / "resume.pt")
    write_manifest(ckpt)
    with pytest.raises(CorruptCheckpointError, match=r"resume\.pt: field 'rngs.torch' must be a 1-D uint8 tensor"):
        checkpoint.load_resume_state(run)
    del state["collector"]
    state["rngs"]["torch"] = torch.get_rng_state()
    torch.save(state, ckpt / "resume.pt")
    write_manifest(ckpt)
    with pytest.raises(CorruptCheckpointError, match="field 'collector' must be a dict"):
        train.main(["--resume", str(run), "--total-timesteps", "512", "--agent.no-anneal-lr"])


# item 9: a full disk
def test_a_full_disk_is_reported_with_the_intact_previous_checkpoint(grid_run, tmp_path, monkeypatch):
    run = copy_run(grid_run, tmp_path / "r")
    agent = agent_for(run)
    before = sorted(p.name for p in run.iterdir())

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 152640 vs 152532")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(OSError, match=r"no space left.*checkpoint-000002 is intact.*--resume") as err:
        save_checkpoint(run / "checkpoint", agent, {}, 999)
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in run.iterdir()) == before  # the half-written version is gone
    assert read_state(run)["global_step"] == read_state(grid_run)["global_step"]


# item 10
def test_a_seed_beyond_numpy_range_names_seed():
    with pytest.raises(ValueError, match=r"seed \(4294967296\) must be < 2\*\*32.*--seed"):
        dataclasses.replace(train.TrainConfig(), seed=2**32)
    assert dataclasses.replace(train.TrainConfig(), seed=2**32 - 1).seed == 2**32 - 1


# item 11: killed before its first checkpoint
def test_a_run_without_a_checkpoint_says_so_and_how_to_start_over(tmp_path):
    run = tmp_path / "r"
    SummaryWriter(str(run)).close()  # what a run killed before its first checkpoint leaves
    with pytest.raises(FileNotFoundError, match=r"holds no checkpoint: the run stopped before its first one.*rm -r"):
        train.main(["--resume", str(run)])
    with pytest.raises(FileExistsError, match=r"holds no checkpoint.*rm -r"):
        train.main([*TINY, "--log-dir", str(tmp_path), "--run-name", "r"])


# item 12: devices and ranks
def test_a_missing_cuda_device_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda: CUDA is not available.*--device auto or --device cpu"):
        distributed.check_device("cuda")
    with pytest.raises(ValueError, match="'gpu' is not a device"):
        distributed.check_device("gpu")
    distributed.check_device("cpu")
    distributed.check_device("auto")


def test_a_frozen_rank_names_the_waiting_rank_and_dist_timeout(monkeypatch):
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.parallel, "comm_device", lambda: torch.device("cpu"))

    def timed_out(*args, **kwargs):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 30000ms")

    monkeypatch.setattr(distributed.dist, "all_reduce", timed_out)
    waited = r"rank 1 waited in vain for the other ranks after the rollout.*--dist-timeout \(now 1800 s\)"
    with pytest.raises(distributed.PeerFailure, match=waited):
        with distributed.agree_on_errors("the rollout"):
            pass


def test_a_rank_frozen_during_the_gradient_all_reduce_is_named_other_update_errors_pass(monkeypatch):
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 0)
    waited = r"rank 0 waited in vain for the other ranks in the update.*--dist-timeout"
    with pytest.raises(distributed.PeerFailure, match=waited):
        with distributed.waiting_for_peers("in the update", timeouts_only=True):
            raise RuntimeError("[gloo/transport/tcp/pair.cc:534] Timed out waiting 30000ms for recv operation")
    with pytest.raises(RuntimeError, match="shape mismatch") as err:  # a bug in the update is not a peer failure
        with distributed.waiting_for_peers("in the update", timeouts_only=True):
            raise RuntimeError("shape mismatch")
    assert not isinstance(err.value, distributed.PeerFailure)
    assert 'waiting_for_peers("in the update", timeouts_only=True)' in inspect.getsource(run_loop.iteration)


def test_an_altered_state_json_is_named_before_its_config_is_read_as_options(grid_run, tmp_path):
    run = copy_run(grid_run, tmp_path / "r")
    state_file = (run / "checkpoint").resolve() / "state.json"
    state_file.write_text(state_file.read_text().replace('"gamma": 0.99', '"gamma": 1.99'))  # not re-hashed
    with pytest.raises(CorruptCheckpointError, match=r"state\.json is corrupt \(SHA-256"):
        train.main(["--resume", str(run)])
