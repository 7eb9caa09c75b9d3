"""``runners.train`` with the models people RLHF: a LoRA adapter (CLI options, exact resume, exports that reload
with peft and, merged, with plain transformers) and bfloat16 weights end to end."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from envs.imdb import load_imdb
from runners.common import cli, distributed
from runners.common.checkpoint import load_checkpoint
from runners.common.export import MERGED_DIR, POLICY_DIR, load_policy
from runners.common.load import load_agent
from runners.common.run_spec import env_kwargs
from runners.train import TrainConfig, preset, train

pytestmark = pytest.mark.usefixtures("one_thread")


def text_cfg(tmp_path, model_dir, name: str, **kw) -> TrainConfig:
    cfg = preset("TextGen-IMDB-v0", "ppo")
    return dataclasses.replace(cfg, num_envs=4, num_steps=7, total_timesteps=3 * 4 * 7, max_new_tokens=6,
                               model=str(model_dir), reward_model="vader", log_dir=str(tmp_path), run_name=name,
                               threads=1, progress=False, device="cpu", checkpoint_every=1,
                               agent=dataclasses.replace(cfg.agent, learning_rate=1e-2, update_epochs=1,
                                                         num_minibatches=1), **kw)


@pytest.fixture(scope="module")
def texts(imdb_dir) -> list[str]:
    return [r["text"] for r in load_imdb("train", source=imdb_dir, limit=100, seed=0)]


def test_lora_cli_options_parse() -> None:
    cfg = cli.parse(TrainConfig, "runners.train", None, ["--env", "TextGen-IMDB-v0", "--lora-r", "16",
                                                        "--lora-target-modules", "q_proj", "v_proj", "--dtype",
                                                        "bfloat16", "--export-merged"])
    assert (cfg.lora_r, cfg.lora_target_modules, cfg.dtype, cfg.export_merged) == (16, ("q_proj", "v_proj"),
                                                                                  "bfloat16", True)
    with pytest.raises(ValueError, match="--lora-r needs"):
        dataclasses.replace(cfg, vectorization_mode="async")
    assert dataclasses.replace(cfg, dtype="float16").dtype == "float16"  # a float32 adapter over a float16 base
    with pytest.raises(ValueError, match="float16 would train float16 weights.*add --lora-r"):
        dataclasses.replace(cfg, dtype="float16", lora_r=0)


def test_lora_run_resumes_exactly_and_exports(tmp_path, tiny_lm_dir, texts) -> None:
    peft = pytest.importorskip("peft")
    over = {"dataset": texts}
    lora = {"lora_r": 4, "lora_target_modules": ("c_attn",), "export_merged": True}
    full = train(text_cfg(tmp_path, tiny_lm_dir, "full", **lora), env_overrides=over)
    train(text_cfg(tmp_path, tiny_lm_dir, "part", stop_at_update=1, **lora), env_overrides=over)
    train(text_cfg(tmp_path, tiny_lm_dir, "part", resume=str(tmp_path / "part"), **lora), env_overrides=over)
    a, b = (load_file(str(tmp_path / n / "checkpoint" / "model.safetensors")) for n in ("full", "part"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the resume is exact
    net = full["agent"].net
    trained = {n: p for n, p in net.named_parameters() if p.requires_grad}
    assert a.keys() == trained.keys() and all(torch.equal(a[k], trained[k]) for k in a)  # adapter + value head only
    assert any("lora_" in k for k in a) and any(k.startswith("value_head") for k in a)
    size = (tmp_path / "full" / "checkpoint" / "model.safetensors").stat().st_size
    assert size < 0.02 * sum(p.numel() * p.element_size() for p in net.parameters())  # far below the full model
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    base_sd = base.state_dict()
    for key, value in net.lm.state_dict().items():  # nothing else moved: the rebuilt base is the run's --model
        if "lora_" not in key:
            assert torch.equal(value, base_sd[key.replace(".base_layer", "")]), key
    ids = torch.tensor([[5, 17, 300, 42, 9, 1000]])
    with torch.no_grad():
        want = net.lm(input_ids=ids).logits
        adapter = peft.PeftModel.from_pretrained(base, str(tmp_path / "full" / POLICY_DIR)).eval()
        torch.testing.assert_close(adapter(input_ids=ids).logits, want, atol=1e-5, rtol=0)
        merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "full" / MERGED_DIR)).eval()
        torch.testing.assert_close(merged(input_ids=ids).logits, want, atol=1e-4, rtol=0)
        loaded = load_policy(tmp_path / "full")
        torch.testing.assert_close(loaded.lm(input_ids=ids).logits, want, atol=1e-5, rtol=0)
        agent = load_agent(tmp_path / "full", device="cpu", env_overrides=over)  # the base rebuilt + the adapter
        torch.testing.assert_close(agent.net.lm(input_ids=ids).logits, want, atol=1e-6, rtol=0)


def test_bfloat16_run_end_to_end(tmp_path, tiny_lm_dir, texts) -> None:
    cfg = text_cfg(tmp_path, tiny_lm_dir, "bf16", dtype="bfloat16", reward_dtype="bfloat16", gradient_checkpointing=True)
    with pytest.warns(UserWarning, match="Prefer --lora-r"):
        result = train(cfg, env_overrides={"dataset": texts})
    net = result["agent"].net
    assert net.lm.is_gradient_checkpointing
    assert net.lm.dtype == torch.bfloat16 and net.value_head.weight.dtype == torch.float32
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in (result["recent_return"], result["recent_kl"]))
    exported = AutoModelForCausalLM.from_pretrained(result["policy_dir"]).eval()
    assert exported.dtype == torch.bfloat16
    ids = torch.tensor([[5, 17, 300, 42, 9, 1000]])
    initial = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.bfloat16).eval()
    trained = net.lm.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in exported.state_dict().items())  # the trained bf16 weights
    with torch.no_grad():
        assert (exported(input_ids=ids).logits - initial(input_ids=ids).logits).abs().max() > 1e-2  # it trained


def test_micro_batch_size_parses_and_must_divide_a_minibatch() -> None:
    cfg = cli.parse(TrainConfig, "runners.train", None, ["--env", "TextGen-IMDB-v0", "--agent.micro-batch-size", "4"])
    assert cfg.agent.micro_batch_size == 4  # the preset's 64 rows in 4 minibatches of 16 sequences: 4 passes each
    with pytest.raises(ValueError, match=r"micro-batch-size \(3\) must divide .* = 64 / 4: pick a divisor of 16"):
        dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, micro_batch_size=3))
    with pytest.raises(ValueError, match=r"needs num_minibatches \(3\) to divide num_envs \(64\)"):
        dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, num_minibatches=3))
    with pytest.raises(ValueError, match="micro_batch_size must be an integer >= 1, got 0"):
        dataclasses.replace(cfg.agent, micro_batch_size=0)
    grid = preset("CatGrid-v0", "ppo")  # a grid minibatch's chunk count varies: any size >= 1 splits it exactly
    assert dataclasses.replace(grid, agent=dataclasses.replace(grid.agent, micro_batch_size=3)).agent.micro_batch_size == 3


def test_ref_and_reward_device_options_reach_the_env_and_are_checked() -> None:
    cfg = cli.parse(TrainConfig, "runners.train", None, ["--env", "TextGen-IMDB-v0", "--ref-device", "cpu",
                                                        "--reward-device", "auto"])
    kw = env_kwargs(cfg)
    assert (kw["device"], kw["ref_device"], kw["reward_device"]) == ("auto", "cpu", "auto")
    assert "ref_device" not in env_kwargs(preset("TextGen-IMDB-v0", "ppo"))  # unset: the env's device
    with pytest.raises(ValueError, match="--ref-device: with --lora-r the reference is the policy itself"):
        dataclasses.replace(cfg, lora_r=4, ref_device="cuda:1")
    assert dataclasses.replace(cfg, lora_r=4, device="cpu", ref_device="cpu").ref_device == "cpu"  # the same device
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--reward-device cuda:1: CUDA is not available"):
            distributed.check_devices(device="cpu", ref_device=None, reward_device="cuda:1")
    with pytest.raises(ValueError, match="--ref-device 'gpu' is not a device"):
        distributed.check_devices(device="cpu", ref_device="gpu")


def test_float16_lora_run_trains_and_skipped_steps_are_not_failures(tmp_path, tiny_lm_dir, texts, monkeypatch) -> None:
    """A float32 adapter over a float16 base trains through the gradient scaler (its state checkpointed); a run
    whose every step overflows finishes (no non-finite failure) with its weights untouched."""
    pytest.importorskip("peft")
    lora = {"lora_r": 4, "lora_target_modules": ("c_attn",), "dtype": "float16"}
    agent = train(text_cfg(tmp_path, tiny_lm_dir, "fp16", **lora), env_overrides={"dataset": texts})["agent"]
    lora_b = {n: p for n, p in agent.net.named_parameters() if "lora_B" in n}
    assert agent.scaler.is_enabled() and lora_b and all(p.dtype == torch.float32 for p in lora_b.values())
    assert agent.net.lm.get_input_embeddings().weight.dtype == torch.float16
    assert max(float(p.detach().abs().max()) for p in lora_b.values()) > 0  # B starts at 0: the adapter trained
    state = json.loads((tmp_path / "fp16" / "checkpoint" / "state.json").read_text())
    assert state["grad_scaler"]["scale"] == agent.scaler.get_scale() == 65536.0 and agent.skipped_steps == 0
    agent.scaler, agent.skipped_steps = torch.amp.GradScaler("cpu", init_scale=8.0), 5
    load_checkpoint(tmp_path / "fp16" / "checkpoint", agent)  # a resume restores the scale and the count
    assert (agent.scaler.get_scale(), agent.skipped_steps) == (65536.0, 0)
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, init_scale=2.0**100))
    agent = train(text_cfg(tmp_path, tiny_lm_dir, "skip", **lora), env_overrides={"dataset": texts})["agent"]
    assert agent.skipped_steps == 3  # 3 updates of one minibatch, every scaled backward overflows
    assert all(float(p.detach().abs().max()) == 0 for n, p in agent.net.named_parameters() if "lora_B" in n)
