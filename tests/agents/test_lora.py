"""A LoRA (peft) policy: the reference is the same base model with the adapter disabled (weights held once),
only the adapter and the value head train, and the export reloads to the trained logits (adapter with peft,
merged with plain transformers). An export that would reload to other weights is refused before it is written."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from lm_zoo import tiny_model
from transformers import AutoModelForCausalLM

import envs  # noqa: F401  (registers the envs)
from agents.agent import Agent, AgentConfig
from agents.networks import CausalLMPolicy, StepBatch
from agents.rollout import RolloutCollector
from envs.imdb import load_imdb
from runners.common.export import MERGED_DIR, POLICY_DIR, export_policy

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.usefixtures("one_thread")


def e_score(texts: list[str]) -> list[float]:
    return [t.count("e") / 10.0 for t in texts]


@pytest.fixture(scope="module")
def lora_run(tiny_tokenizer):
    tok = tiny_tokenizer
    base = tiny_model("llama", vocab_size=len(tok), pad=tok.pad_token_id, bos=tok.bos_token_id, eos=tok.eos_token_id)
    original = copy.deepcopy(base)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = peft.get_peft_model(base, config)  # random B: the policy differs from its base from the start
    texts = [r["text"] for r in load_imdb("train", limit=100, seed=0)]
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=3, vectorization_mode="vector_entry_point", model=model,
                        tokenizer=tok, reward_model=e_score, dataset=texts, max_new_tokens=6, prompt_min_len=3,
                        prompt_max_len=7, kl_coef=0.3, device="cpu")
    agent = Agent(CausalLMPolicy(model), AgentConfig(gamma=1.0, update_epochs=1, num_minibatches=1,
                                                     learning_rate=1e-2))
    before = {k: v.clone() for k, v in agent.net.state_dict().items()}
    collector = RolloutCollector(venv, agent, 8, seed=0)
    ro, _ = collector.collect()
    agent.update(ro)
    return venv, agent, collector, model, original, before


def test_reference_is_the_base_with_the_adapter_disabled(lora_run) -> None:
    venv, agent, collector, model, original, _ = lora_run
    core = venv.unwrapped.core
    assert core.ref_model is model  # the same weights, not a copy
    ro, log = collector.collect()  # after an update: the reference must still be the untouched base
    slot = ro.obs.slot.numpy()  # only each chunk's last context is stored; one token per step before it
    checked = 0
    for t in range(ro.actions.shape[0]):
        for i in range(ro.actions.shape[1]):
            if not ro.valid[t, i] or ro.episode_start[t, i]:
                continue
            end = t + int(np.argmax(slot[t:, i] >= 0))  # the step that ends t's chunk
            last = ro.obs.step(end, i)
            real = last["input_ids"][last["attention_mask"] == 1]
            tokens = real[: real.numel() - (end - t)][None]  # (1, L_t) the context of step t
            with torch.no_grad():
                lp_base = torch.log_softmax(original(input_ids=tokens).logits[0, -1].double(), -1)
                lp_pol = torch.log_softmax(model(input_ids=tokens).logits[0, -1].double(), -1)
            a = int(ro.actions[t, i])
            assert abs(float(ro.logprobs[t, i]) - float(lp_pol[a])) < 1e-4  # the policy: adapter on
            if not ro.terminated[t, i]:  # the reward before the last token: -β(log π_θ - log π_ref), π_ref = base
                assert abs(float(ro.rewards[t, i]) + 0.3 * float(lp_pol[a] - lp_base[a])) < 1e-4
                checked += 1
    assert checked > 5
    assert np.abs(log.kls).max() > 1e-3  # the adapter changes the policy: KL to the base is not 0
    tokens = torch.tensor([[5, 17, 300, 42, 9]])
    with torch.no_grad(), model.disable_adapter():
        torch.testing.assert_close(model(input_ids=tokens).logits, original(input_ids=tokens).logits)


def test_only_the_adapter_and_value_head_train(lora_run) -> None:
    _, agent, _, _, _, before = lora_run
    in_optimizer = {id(p) for g in agent.optimizer.param_groups for p in g["params"]}
    names = {n for n, p in agent.net.named_parameters() if id(p) in in_optimizer}
    assert names and all("lora_" in n or n.startswith("value_head") for n in names)
    after = agent.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k or k.startswith("value_head") for k in changed)
    assert any("lora_" in k for k in changed)


def test_export_reloads_to_the_trained_logits(lora_run, tiny_tokenizer, tmp_path) -> None:
    _, agent, _, model, original, _ = lora_run
    export_policy(agent.net, tiny_tokenizer, tmp_path, 6, merged=True)
    tokens = torch.tensor([[5, 17, 300, 42, 9, 1000]])
    with torch.no_grad():
        want = model(input_ids=tokens).logits
        adapter = peft.PeftModel.from_pretrained(copy.deepcopy(original), str(tmp_path / POLICY_DIR))
        torch.testing.assert_close(adapter(input_ids=tokens).logits, want, atol=1e-5, rtol=0)
        merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / MERGED_DIR))
        torch.testing.assert_close(merged(input_ids=tokens).logits, want, atol=1e-4, rtol=0)
    assert (tmp_path / POLICY_DIR / "adapter_config.json").is_file()


def test_an_export_that_would_reload_random_weights_is_refused(lora_run, tiny_tokenizer, tmp_path) -> None:
    """The injected model without its PeftModel saves peft's key names: from_pretrained would miss q/v."""
    _, _, _, model, _, _ = lora_run
    net = CausalLMPolicy(copy.deepcopy(model).get_base_model())
    with pytest.raises(RuntimeError, match="reloads to different logits"):
        export_policy(net, tiny_tokenizer, tmp_path, 6)
    assert not (tmp_path / POLICY_DIR).exists()


class Counted(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, calls: list[int]) -> None:
        super().__init__()
        self.inner, self.calls = inner, calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(1)
        return self.inner(x)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_tokenizer) -> None:
    """The update's teacher-forced pass with activations recomputed in the backward pass: same gradients, and
    the layers really run twice."""
    ids = torch.tensor([[0, 0, 5, 17, 30, 42], [0, 5, 17, 30, 42, 9], [5, 17, 30, 42, 9, 100]])  # one chunk's prefixes
    obs = {"input_ids": ids, "attention_mask": (torch.arange(6) >= torch.tensor([[2], [1], [0]])).long()}
    batch = StepBatch(obs, torch.tensor([9, 100, 7]), torch.zeros(3, dtype=torch.long), torch.tensor([2, 1, 0]),
                      torch.tensor([2]))

    def grads(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
        net = CausalLMPolicy(tiny_model("llama"))
        if checkpointing:
            net.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        calls: list[int] = []
        net.lm.model.layers[0].mlp.act_fn = Counted(net.lm.model.layers[0].mlp.act_fn, calls)  # hooks skip recompute
        net.train()
        logits, values = net.evaluate(batch)
        (torch.log_softmax(logits, -1).gather(1, batch.actions[:, None]).sum() + values.sum()).backward()
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}, len(calls)

    (plain, once), (recomputed, twice) = grads(False), grads(True)
    assert (once, twice) == (1, 2)
    assert plain.keys() == recomputed.keys()
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], atol=1e-6, rtol=1e-5)
