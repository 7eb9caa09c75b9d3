"""Bytes of a rollout's stored observations and update time: one context per chunk against every step's context.

    python benchmarks/rollout_memory.py --rollouts 3

An LM policy's rollout stores only the contexts of the steps that end a chunk (:mod:`agents.history_obs`); the
collector's ``full_obs=True`` keeps the former ``(T, N, L)`` stack of every step's context. For
``CatGrid-Text-v0`` (16 rows x 64 steps, 256-token context, PPO with the ``benchmarks/catgrid_text.py``
settings, a random 2-layer GPT-2 of width 64) and ``TextGen-IMDB-v0`` at the ``runners.train`` text preset's sizes
(64 rows x 17 steps, 16 new tokens, PPO, a random tiny GPT-2 and a character-count reward), each mode runs the same
seeded rollouts and updates; the script prints the stored bytes per rollout, the mean collect and update seconds,
and checks that both modes end with bit-identical parameters.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the envs)
from agents.agent import Agent, AgentConfig
from agents.history_obs import obs_nbytes
from agents.networks import build_network
from agents.rollout import RolloutCollector
from envs.catgrid_text import CATGRID_TEXT_DEFAULTS, CatGridTextVectorEnv
from envs.catgrid_turns import CatGridTurnEnv, catgrid_move_policy
from envs.imdb import load_imdb
from envs.transcripts import play_transcripts, transcript_text
from runners.common.tiny_lm import make_tiny_lm, train_tokenizer


def catgrid_text() -> tuple[gym.vector.VectorEnv, Any, AgentConfig, int]:
    """CatGrid-Text-v0, 16 rows, its tiny LM, benchmarks/catgrid_text.py's PPO settings, 64 steps."""
    played = play_transcripts(lambda: CatGridTurnEnv(max_turns=12), catgrid_move_policy, 200, seed=0)
    eot, env_end = CATGRID_TEXT_DEFAULTS["end_of_turn"], CATGRID_TEXT_DEFAULTS["env_suffix"]
    tok = train_tokenizer([transcript_text(t, eot, env_end) for t in played], vocab_size=400)
    lm = make_tiny_lm(tok, seed=0, n_layer=2, n_head=2, n_embd=64, n_positions=256).eval()
    venv = CatGridTextVectorEnv(16, model=lm, tokenizer=tok, kl_coef=0.0, device="cpu")
    config = AgentConfig(gamma=1.0, learning_rate=5e-4, update_epochs=4, num_minibatches=4, anneal_lr=False)
    return venv, lm, config, 64


def textgen() -> tuple[gym.vector.VectorEnv, Any, AgentConfig, int]:
    """TextGen-IMDB-v0 at the text preset's sizes (64 rows, 17 steps, 16 new tokens) with a random tiny GPT-2."""
    texts = [r["text"] for r in load_imdb("train", limit=2000, seed=0)]
    tok = train_tokenizer(texts, vocab_size=2000)
    lm = make_tiny_lm(tok, seed=0).eval()
    score = lambda ts: [t.count("e") / 10.0 for t in ts]  # noqa: E731
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=64, vectorization_mode="vector_entry_point", model=lm,
                        tokenizer=tok, reward_model=score, dataset=texts, max_new_tokens=16, kl_coef=0.05,
                        device="cpu")
    config = AgentConfig(gamma=1.0, learning_rate=1.41e-5, anneal_lr=False, update_epochs=4, num_minibatches=4,
                         vf_coef=0.1, max_grad_norm=1.0)
    return venv, lm, config, 17


def run(make: Callable[[], tuple[gym.vector.VectorEnv, Any, AgentConfig, int]], full_obs: bool,
        rollouts: int) -> dict[str, Any]:
    """``rollouts`` seeded collect + update rounds; stored bytes, seconds and the final parameters."""
    venv, lm, config, steps = make()
    torch.manual_seed(0)  # the value head's initialisation, then the sampling
    net = build_network(venv.single_observation_space, venv.single_action_space, lm=copy.deepcopy(lm))
    agent = Agent(net, config)
    collector = RolloutCollector(venv, agent, steps, seed=0, full_obs=full_obs)
    nbytes, collect_s, update_s = [], [], []
    for _ in range(rollouts):
        t0 = time.perf_counter()
        ro, _ = collector.collect()
        t1 = time.perf_counter()
        agent.update(ro)
        collect_s.append(t1 - t0)
        update_s.append(time.perf_counter() - t1)
        nbytes.append(obs_nbytes(ro.obs))
    return {"bytes": float(np.mean(nbytes)), "collect": float(np.mean(collect_s)), "update": float(np.mean(update_s)),
            "params": [p.detach().clone() for p in agent.net.parameters()], "shape": (steps, venv.num_envs)}


@dataclasses.dataclass(frozen=True)
class Args:
    rollouts: int = 3
    envs: tuple[str, ...] = ("CatGrid-Text-v0", "TextGen-IMDB-v0")


def main() -> None:
    import tyro

    args = tyro.cli(Args)
    torch.set_num_threads(1)
    makers = {"CatGrid-Text-v0": catgrid_text, "TextGen-IMDB-v0": textgen}
    print(f"{'env':>16} {'T x N':>7} {'storage':>15} {'obs bytes':>11} {'collect s':>9} {'update s':>8}")
    for name in args.envs:
        modes = ("full stack", "one per chunk")
        results = {mode: run(makers[name], mode == "full stack", args.rollouts) for mode in modes}
        for mode, r in results.items():
            T, N = r["shape"]
            print(f"{name:>16} {f'{T}x{N}':>7} {mode:>15} {r['bytes']:11,.0f} {r['collect']:9.2f} {r['update']:8.2f}")
        same = all(torch.equal(p, q) for p, q in zip(*(r["params"] for r in results.values())))
        ratio = results["full stack"]["bytes"] / results["one per chunk"]["bytes"]
        print(f"{name:>16}: {ratio:.1f}x fewer bytes; parameters after {args.rollouts} updates "
              f"{'bit-identical' if same else 'DIFFER'}", flush=True)


if __name__ == "__main__":
    main()
