"""Tensor memory of RLHF with full fine-tuning versus a LoRA adapter, at GPT-2 sizes (random weights, no download).

After one rollout and one PPO update on TextGen-IMDB-v0, counts every tensor the run holds, each storage once:
the policy's weights, the env's reference, gradients and Adam's state. Full fine-tuning holds a second copy of
the weights (the frozen reference) and Adam's two moments of every weight; a LoRA policy shares its weights with
the reference (the base with the adapter disabled) and trains only the adapter and the value head::

    OMP_NUM_THREADS=1 python benchmarks/lora_memory.py --sizes 30M 124M --lora-r 16

Activations are not counted (they depend on the batch, not on the method).
"""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import torch
import tyro
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

import envs  # noqa: F401  (registers the envs)
from agents.agent import Agent, AgentConfig
from agents.networks import CausalLMPolicy
from agents.rollout import RolloutCollector
from envs.imdb import load_imdb
from runners.common.tiny_lm import train_tokenizer

SIZES = {"30M": dict(n_embd=384, n_layer=6, n_head=6), "124M": dict(n_embd=768, n_layer=12, n_head=12)}


@dataclasses.dataclass
class Args:
    sizes: tuple[str, ...] = ("30M", "124M")
    """GPT-2 shapes: 30M (6 layers, width 384, the GPT-2 vocabulary) and 124M (gpt2)"""
    lora_r: int = 16
    num_envs: int = 4


def held_bytes(agent: Agent, ref: torch.nn.Module) -> dict[str, int]:
    """Bytes of weights (policy + reference), gradients and optimizer state, every storage counted once."""
    seen: set[int] = set()

    def size(tensors) -> int:
        total = 0
        for t in tensors:
            key = t.untyped_storage().data_ptr()
            if t.numel() and key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
        return total

    weights = size(list(agent.net.parameters()) + list(ref.parameters()))
    grads = size(p.grad for p in agent.net.parameters() if p.grad is not None)
    state = size(v for s in agent.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim())
    return {"weights": weights, "grads": grads, "adam": state}


def measure(size: str, lora_r: int, num_envs: int, tok, texts) -> dict[str, dict[str, int]]:
    config = GPT2Config(vocab_size=50257, n_positions=1024, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, **SIZES[size])
    torch.manual_seed(0)
    base = GPT2LMHeadModel(config).eval()
    out = {}
    for method in ("full", "lora"):
        model = copy.deepcopy(base)
        if method == "lora":
            model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=["c_attn"],
                                                     lora_dropout=0.0, task_type="CAUSAL_LM"))
        venv = gym.make_vec("TextGen-IMDB-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                            model=model, tokenizer=tok, reward_model="vader", dataset=texts, max_new_tokens=8,
                            device="cpu")
        policy = model if method == "lora" else copy.deepcopy(model)
        agent = Agent(CausalLMPolicy(policy), AgentConfig(gamma=1.0, update_epochs=1, num_minibatches=1))
        ro, _ = RolloutCollector(venv, agent, 9, seed=0).collect()
        agent.update(ro)
        out[method] = held_bytes(agent, venv.unwrapped.core.ref_model)
    return out


def main() -> None:
    args = tyro.cli(Args)
    texts = [r["text"] for r in load_imdb("train", limit=200, seed=0)]
    tok = train_tokenizer(texts, vocab_size=1024)
    print("| model | method | weights MB | grads MB | Adam MB | total MB |")
    print("|---|---|---:|---:|---:|---:|")
    for size in args.sizes:
        for method, b in measure(size, args.lora_r, args.num_envs, tok, texts).items():
            mb = {k: v / 2**20 for k, v in b.items()}
            print(f"| GPT-2 {size} | {method} | {mb['weights']:.0f} | {mb['grads']:.1f} | {mb['adam']:.1f} | "
                  f"{sum(mb.values()):.0f} |")


if __name__ == "__main__":
    main()
