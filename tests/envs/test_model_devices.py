"""The reference and the reward model on devices of their own (``ref_device``, ``reward_device``; default: the
env's ``device``): each model is loaded on its device, only ids, log-probs and scores cross, and the rewards are
those of one device. A PeftModel policy's reference is the policy itself, so it cannot move."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from lm_zoo import tiny_model
from transformers import GPT2Config, GPT2ForSequenceClassification

import envs  # noqa: F401  (registers the envs)
from envs import textgen_core
from envs.textgen_setup import model_devices


def classifier(tokenizer) -> GPT2ForSequenceClassification:
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2, num_labels=1,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    return GPT2ForSequenceClassification(config).eval()


def rollout(venv: gym.vector.VectorEnv, steps: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Rewards and ref log-probs (T, N) of a fixed action sequence."""
    venv.reset(seed=3)
    actions = np.random.default_rng(0).integers(10, 500, size=(steps, venv.num_envs))
    rewards, ref = [], []
    for a in actions:
        _, r, _, _, info = venv.step(a)
        rewards.append(r)
        ref.append(np.where(info.get("_ref_logprob", False), info.get("ref_logprob", 0.0), 0.0))
    return np.array(rewards), np.array(ref)


@pytest.mark.parametrize("ref_mode", ["per_step", "one_pass"])
def test_models_load_on_their_own_devices_with_the_same_rewards(kw, tiny_tokenizer, monkeypatch, ref_mode) -> None:
    loaded: dict[str, torch.device] = {}
    ref_loader, reward_loader = textgen_core.reference_model, textgen_core.make_reward_fn

    def reference_model(*args, **kwargs):
        loaded["ref"] = args[3]
        return ref_loader(*args, **kwargs)

    def make_reward_fn(*args, **kwargs):
        loaded["reward"] = kwargs["device"]
        return reward_loader(*args, **kwargs)

    monkeypatch.setattr(textgen_core, "reference_model", reference_model)
    monkeypatch.setattr(textgen_core, "make_reward_fn", make_reward_fn)
    base = dict(kw, reward_model=(classifier(tiny_tokenizer), tiny_tokenizer), max_new_tokens=4, prompt_max_len=5,
                ref_mode=ref_mode)
    results = []
    cases = (({}, ("cpu", "cpu")), ({"ref_device": "cpu:0", "reward_device": "auto"}, ("cpu:0", "cpu")),
             ({"ref_device": "auto", "reward_device": "cpu:0"}, ("cpu", "cpu:0")))  # cpu:0: a device of its own
    for extra, want in cases:
        venv = gym.make_vec("TextGen-IMDB-v0", num_envs=3, vectorization_mode="vector_entry_point", **base, **extra)
        core = venv.unwrapped.core
        assert (core.ref_device, core.reward_device) == tuple(map(torch.device, want))  # "auto" on CPU: cpu
        assert (loaded["ref"], loaded["reward"]) == (core.ref_device, core.reward_device)
        assert core.device == torch.device("cpu")
        results.append(rollout(venv))
    (r0, ref0), *others = results
    assert np.abs(r0).max() > 0 and (ref_mode == "one_pass" or np.abs(ref0).max() > 0)
    for r1, ref1 in others:
        np.testing.assert_array_equal(r1, r0)
        np.testing.assert_array_equal(ref1, ref0)


def test_a_peft_policy_reference_stays_on_the_policy_device() -> None:
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_model("llama"), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    assert model_devices("cpu", None, "auto", model) == (torch.device("cpu"),) * 3
    with pytest.raises(ValueError, match="reference is the policy itself .* leave ref_device=None"):
        model_devices("cpu", "cpu:0", None, model)
    with pytest.raises(ValueError, match="unknown device 'tpu7'"):
        model_devices("cpu", None, "tpu7", tiny_model("gpt2"))
