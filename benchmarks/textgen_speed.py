"""Benchmark TextGen-IMDB-v0 + the agent against ``model.generate()``, in one process.

    python benchmarks/textgen_speed.py --threads 2

Workload (as in the issue): a tiny GPT-2 (2 layers, 4 heads, 128 dims, vocab 8192, random
weights, BPE tokenizer trained on IMDB in seconds), batch 64, prompts of exactly 8 tokens,
16 new tokens, multinomial sampling at temperature 1.

(a) rollout response tokens/s: ``RolloutCollector.collect()`` through the natively
    vectorized env (reference log-probs by a KV-cached reference model, reward scoring of
    finished rows) and the agent's KV-cached policy, vs ``model.generate()`` on the same batch.
(b) PPO iteration throughput: rollout + reference + reward scoring + one PPO epoch with 4
    minibatches, in response tokens per second. The reward model is a tiny GPT-2 sequence
    classifier (the shape our reward-model trainer saves).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from transformers import GPT2ForSequenceClassification

import envs  # noqa: F401
from agents.agent import Agent, AgentConfig
from agents.networks import CausalLMPolicy
from envs.imdb import load_imdb
from envs.lm import make_reward_fn
from runners.lm_presets import make_tiny_lm, tiny_gpt2_config, train_tokenizer
from runners.rollout import RolloutCollector


@dataclass
class Args:
    threads: int = 2
    batch: int = 64
    prompt_len: int = 8
    new_tokens: int = 16
    repeats: int = 5
    seed: int = 0


def setup(args: Args):
    rows = load_imdb("train", limit=2000, seed=0)
    tok = train_tokenizer((r["text"] for r in rows), vocab_size=8192)
    torch.manual_seed(args.seed)
    lm = make_tiny_lm(tok, seed=args.seed, n_layer=2, n_head=4, n_embd=128).eval()
    rm_cfg = tiny_gpt2_config(tok, n_layer=2, n_head=4, n_embd=128)
    rm_cfg.num_labels = 1
    rm = GPT2ForSequenceClassification(rm_cfg).eval()
    return tok, lm, rm


def bench_generate(args: Args, tok, lm, prompts: np.ndarray) -> float:
    ids = torch.as_tensor(prompts)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, do_sample=True, top_k=0,
                    pad_token_id=tok.pad_token_id)  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            out = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                              min_new_tokens=args.new_tokens, do_sample=True, top_k=0, pad_token_id=tok.pad_token_id)
        dt = time.perf_counter() - t0
    assert out.shape[1] == args.prompt_len + args.new_tokens
    return args.repeats * args.batch * args.new_tokens / dt


def make_agent_and_envs(args: Args, tok, lm, rm, algo_cfg: AgentConfig, kl_coef: float = 0.2):
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=args.batch, vectorization_mode="vector_entry_point",
                        model=lm, tokenizer=tok, reward_model=make_reward_fn(rm, device="cpu", tokenizer=tok), prompt_min_len=args.prompt_len,
                        prompt_max_len=args.prompt_len, max_new_tokens=args.new_tokens, kl_coef=kl_coef, device="cpu")
    agent = Agent(CausalLMPolicy(copy.deepcopy(lm)), algo_cfg)
    agent.net.eval()
    collector = RolloutCollector(venv, agent, num_steps=args.new_tokens + 1, seed=args.seed)
    return venv, agent, collector


def bench_rollout(args: Args, tok, lm, rm) -> float:
    _, _, collector = make_agent_and_envs(args, tok, lm, rm, AgentConfig())
    collector.collect()  # warm-up (and aligns every row on an episode start)
    tokens, t0 = 0, time.perf_counter()
    for _ in range(args.repeats):
        ro, _ = collector.collect()
        tokens += int(ro.valid.sum())
    return tokens / (time.perf_counter() - t0)


def bench_ppo(args: Args, tok, lm, rm) -> float:
    cfg = AgentConfig(algo="ppo", update_epochs=1, num_minibatches=4, gamma=1.0, learning_rate=1e-5, anneal_lr=False)
    _, agent, collector = make_agent_and_envs(args, tok, lm, rm, cfg)
    agent.update(collector.collect()[0])  # warm-up
    tokens, t0 = 0, time.perf_counter()
    for _ in range(args.repeats):
        ro, _ = collector.collect()
        agent.update(ro)
        tokens += int(ro.valid.sum())
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    import tyro

    args = tyro.cli(Args)
    torch.set_num_threads(args.threads)
    tok, lm, rm = setup(args)
    rng = np.random.default_rng(args.seed)
    prompts = rng.integers(0, len(tok), size=(args.batch, args.prompt_len))
    gen = bench_generate(args, tok, lm, prompts)
    roll = bench_rollout(args, tok, lm, rm)
    ppo = bench_ppo(args, tok, lm, rm)
    print(f"workload: batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new tokens, "
          f"tiny GPT-2 2x4x128 vocab {len(tok)}, {args.threads} threads")
    print(f"(a) model.generate()              {gen:10.0f} response tokens/s")
    print(f"    env + agent rollout (KV cache) {roll:10.0f} response tokens/s  ratio {roll / gen:.2f}x")
    print(f"(b) PPO iteration (1 epoch, 4 mb)  {ppo:10.0f} response tokens/s")


if __name__ == "__main__":
    main()
