"""The trained text policy leaves as a standard transformers model: policy/ round trip, generate(), reuse."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

import envs  # noqa: F401  (registers the envs)
from envs.imdb import load_imdb
from runners.common.export import POLICY_DIR, VALUE_HEAD_FILE, generation_config, load_policy
from runners.train import preset, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tiny_lm, tiny_tokenizer, tmp_path_factory):
    """Two PPO updates at a high learning rate (the weights move) with length controls on."""
    tmp = tmp_path_factory.mktemp("export")
    cfg = preset("TextGen-IMDB-v0", "ppo")
    cfg = dataclasses.replace(cfg, num_envs=8, num_steps=7, total_timesteps=2 * 8 * 7, max_new_tokens_range=(4, 6),
                              min_new_tokens=3, agent=dataclasses.replace(cfg.agent, learning_rate=1e-2),
                              log_dir=str(tmp), run_name="run", threads=1, progress=False)
    texts = [r["text"] for r in load_imdb("train", limit=200, seed=0)]
    result = train(cfg, env_overrides={"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": "vader",
                                       "dataset": texts, "device": "cpu"})
    return result, texts


def test_exported_policy_is_a_plain_transformers_model_with_the_agents_logits(trained, tiny_lm) -> None:
    result, _ = trained
    agent, run_dir = result["agent"], result["policy_dir"].rsplit("/", 1)[0]
    policy = f"{run_dir}/{POLICY_DIR}"
    assert result["policy_dir"].endswith(POLICY_DIR)
    model = AutoModelForCausalLM.from_pretrained(policy).eval()
    with safe_open(f"{policy}/model.safetensors", "pt") as f:
        assert not any("value" in k for k in f.keys())  # the LM alone
    ids = torch.tensor([[5, 17, 300, 42, 9, 1000]])
    with torch.no_grad():
        exported = model(ids).logits  # (1, L, V)
        ours = agent.net.lm(ids).logits
        initial = tiny_lm(ids).logits
        # the agent's own acting path: policy head on the KV-cached trunk, last position
        agent.net.reset_state()
        act_logits, act_value = agent.net.act({"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                                              episode_start=[True])
    assert torch.allclose(exported, ours, atol=1e-5, rtol=0)
    assert torch.allclose(exported[:, -1], act_logits, atol=1e-4, rtol=0)
    assert (exported - initial).abs().max() > 1e-3  # the trained weights, not the starting ones
    net = load_policy(run_dir)
    assert torch.equal(net.value_head.weight, agent.net.value_head.weight.cpu())  # value head saved beside it
    with safe_open(f"{run_dir}/{VALUE_HEAD_FILE}", "pt") as f:
        assert set(f.keys()) == {"weight", "bias"}


def test_exported_policy_generates_with_the_envs_length_limits(trained) -> None:
    result, _ = trained
    policy = result["policy_dir"]
    model = AutoModelForCausalLM.from_pretrained(policy).eval()
    tok = AutoTokenizer.from_pretrained(policy)
    gen = model.generation_config
    assert (gen.do_sample, gen.top_k, gen.max_new_tokens, gen.min_new_tokens) == (True, 0, 6, 3)
    assert gen.eos_token_id == tok.eos_token_id
    torch.manual_seed(0)
    batch = tok(["This movie was"] * 32, return_tensors="pt")
    out = model.generate(**batch)
    new = out[:, batch["input_ids"].shape[1]:]
    assert new.shape[1] <= 6 and not (new[:, :3] == tok.eos_token_id).any()  # min_new_tokens honoured


def test_exported_policy_drives_a_new_env_and_a_new_run(trained, tmp_path) -> None:
    result, texts = trained
    policy = result["policy_dir"]
    env = gym.make("TextGen-IMDB-v0", model=policy, reward_model=lambda t: [0.0] * len(t), dataset=texts,
                   device="cpu", max_new_tokens=4)
    env.reset(seed=0)
    assert env.step(5)[4]["new_tokens"] == 1
    cfg = dataclasses.replace(preset("TextGen-IMDB-v0", "ppo"), model=policy, reward_model="vader", dataset=None,
                              num_envs=4, num_steps=4, max_new_tokens=3, total_timesteps=16, log_dir=str(tmp_path),
                              run_name="again", threads=1, progress=False, device="cpu")
    again = train(cfg, env_overrides={"dataset": texts})
    first = AutoModelForCausalLM.from_pretrained(policy)
    # the new run started from the exported weights: one small update away from them
    start = dict(first.named_parameters())
    moved = max((p.detach() - start[n]).abs().max().item() for n, p in again["agent"].net.lm.named_parameters())
    assert 0 < moved < 0.05


def test_generation_config_keeps_every_eos_id(tiny_lm, tiny_tokenizer) -> None:
    eos = tiny_tokenizer.eos_token_id
    assert generation_config(tiny_lm, tiny_tokenizer, 8, eos_token_ids=[808, eos]).eos_token_id == [eos, 808]
    assert generation_config(tiny_lm, tiny_tokenizer, 8, eos_token_ids=[eos]).eos_token_id == eos
    assert generation_config(tiny_lm, tiny_tokenizer, 8).eos_token_id == eos
