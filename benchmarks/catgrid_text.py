"""CatGrid-Text-v0 learning: a tiny LM SFT'd on random legal transcripts, then RL, against the exact optimum.

    python benchmarks/catgrid_text.py --seeds 0 1 2 --algos ppo

Per seed: 1500 transcripts of uniformly random legal play (``envs.transcripts``, 12 turns at most; with
``--recipe.optimal-prob p`` each move is the discounted optimum's with probability p) train a 2-layer GPT-2 from
scratch with the project's SFT stage (``runners.sft``, its own 400-token BPE). Its greedy policy never reaches the
meat. Then the algorithm trains it on ``CatGrid-Text-v0`` (5x5 map, γ = 1, no KL, running reward scaling) and the
greedy policy plays the first episode of 64 rows. The target is the undiscounted finite-horizon optimum V*(start)
of the turn MDP (``optimal_start_return()``). Prints, for the SFT start and each algorithm: env steps (agent
tokens), transcript tokens (the agent's and the env's, of finished episodes), episodes, minutes and the greedy
return / V*(start). A model SFT'd with the same seed and recipe under ``--out`` is reused.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers CatGrid-Text-v0)
from agents.agent import Agent, AgentConfig
from agents.networks import build_network
from agents.rollout import RolloutCollector
from envs.catgrid_text import CATGRID_TEXT_DEFAULTS, CatGridTextVectorEnv
from envs.catgrid_turns import CatGridTurnEnv, catgrid_move_policy
from envs.transcripts import play_transcripts, transcript_text, write_transcripts
from runners.sft import load_model_and_tokenizer, run_sft, tiny_config


@dataclasses.dataclass(frozen=True)
class Recipe:
    """SFT and RL budgets of one run (docs/multiturn.md's figures use the defaults)."""

    transcripts: int = 1500
    optimal_prob: float = 0.0
    """the transcripts' player: each move with this probability the discounted optimum's, else a random move word"""
    sft_steps: int = 400
    updates: int = 13
    num_envs: int = 128
    num_steps: int = 64
    learning_rate: float = 1e-4
    ent_coef: float = 0.0
    kl_coef: float = 0.0
    reward_norm: Literal["off", "scale", "center"] = "scale"
    """the agent's running reward normalisation (``off``, ``scale``, ``center``): without it the value loss of
    returns near 100 swamps the shared trunk's policy gradient"""
    gae_lambda: float = 0.95
    eval_rows: int = 64


def sft_model(out: Path, seed: int, recipe: Recipe) -> tuple[Any, Any]:
    """A tiny GPT-2 SFT'd from scratch on random legal CatGrid-Text transcripts -> (model, tokenizer)."""
    turns = int(CATGRID_TEXT_DEFAULTS["max_turns"])
    def player(env: Any) -> Any:
        return catgrid_move_policy(env, recipe.optimal_prob)

    played = play_transcripts(lambda: CatGridTurnEnv(max_turns=turns), player, recipe.transcripts, seed=seed)
    eot, env_end = CATGRID_TEXT_DEFAULTS["end_of_turn"], CATGRID_TEXT_DEFAULTS["env_suffix"]
    path = write_transcripts(out / "transcripts.jsonl", [transcript_text(t, eot, env_end) for t in played])
    cfg = tiny_config(data=str(path), output_dir=str(out / "sft"), log_dir=str(out / "runs"), vocab_size=400,
                      tokenizer_reviews=recipe.transcripts, max_train_reviews=None, n_layer=2, n_head=2, n_embd=64,
                      block_size=128, batch_size=16, max_steps=recipe.sft_steps, warmup_steps=20, learning_rate=3e-3,
                      eval_reviews=50, eval_every=10_000, num_samples=0, device="cpu", num_threads=1, seed=seed)
    run_sft(cfg)
    return load_model_and_tokenizer(str(out / "sft"))


def greedy_return(net: Any, lm: Any, tok: Any, rows: int, seed: int) -> np.ndarray:
    """(rows,) returns of the greedy policy's first episode in each of ``rows`` rows."""
    env = CatGridTextVectorEnv(rows, model=lm, tokenizer=tok, kl_coef=0.0, device="cpu")
    obs, _ = env.reset(seed=seed)
    ret, done, start = np.zeros(rows), np.zeros(rows, dtype=bool), np.ones(rows, dtype=bool)
    net.reset_state()
    while not done.all():
        with torch.no_grad():
            logits, _ = net.act(obs, start)
        obs, reward, term, trunc, _ = env.step(logits.argmax(-1).cpu().numpy())
        ret += np.where(done, 0.0, reward)
        done |= term | trunc
        start[:] = False
    net.reset_state()
    return ret


def sft_start(lm: Any, tok: Any, seed: int, recipe: Recipe) -> dict[str, float]:
    """The SFT model's own greedy return (the RL start) against V*(start), on the evaluation's rows and seed."""
    env = CatGridTextVectorEnv(1, model=lm, tokenizer=tok, kl_coef=0.0, device="cpu")
    net = build_network(env.single_observation_space, env.single_action_space, lm=copy.deepcopy(lm))
    ret, v_star = greedy_return(net, lm, tok, recipe.eval_rows, 10_000 + seed), env.optimal_start_return()
    return {"greedy": float(ret.mean()), "ratio": float(ret.mean()) / v_star}


class TranscriptTokens(gym.vector.VectorWrapper):
    """Counts the tokens of finished episodes' transcripts (the env's and the agent's): ``self.tokens``."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self.tokens = 0

    def step(self, actions: Any) -> Any:
        obs, reward, term, trunc, info = self.env.step(actions)
        self.tokens += int(obs["attention_mask"][term | trunc].sum())  # the final observation holds the transcript
        return obs, reward, term, trunc, info


def train(lm: Any, tok: Any, algo: str, seed: int, recipe: Recipe, progress: bool = False,
          eval_every: int = 0) -> dict[str, Any]:
    """RL on CatGrid-Text-v0 from the SFT model; the greedy return against V*(start)."""
    group = 4 if algo in ("grpo", "rloo") else 1
    counter = TranscriptTokens(
        CatGridTextVectorEnv(recipe.num_envs, model=lm, tokenizer=tok, kl_coef=recipe.kl_coef, device="cpu"))
    venv = gym.wrappers.vector.RecordEpisodeStatistics(counter)
    v_star = float(venv.unwrapped.optimal_start_return())  # type: ignore[attr-defined]
    torch.manual_seed(seed)  # before the value head's initialisation: same seed, same run
    net = build_network(venv.single_observation_space, venv.single_action_space, lm=lm)
    epochs = 4 if algo in ("ppo", "grpo") else 1
    config = AgentConfig(algo=algo, gamma=1.0, gae_lambda=recipe.gae_lambda,  # type: ignore[arg-type]
                         learning_rate=recipe.learning_rate, update_epochs=epochs, num_minibatches=4,
                         ent_coef=recipe.ent_coef, anneal_lr=False, reward_norm=recipe.reward_norm)
    agent = Agent(net, config, total_updates=recipe.updates)
    collector = RolloutCollector(venv, agent, recipe.num_steps, seed=seed, group_size=group)
    start, episodes, first = time.perf_counter(), 0, None
    for update in range(recipe.updates):
        rollout, log = collector.collect()
        agent.update(rollout)
        episodes += len(log.returns)
        if progress and log.returns:
            print(f"  update {update}: {collector.global_step} steps, mean return {np.mean(log.returns):.1f} "
                  f"({len(log.returns)} episodes, {np.mean(log.lengths):.1f} tokens)", flush=True)
        if first is None and log.returns:
            first = float(np.mean(log.returns))
        if progress and eval_every and (update + 1) % eval_every == 0:
            ret = greedy_return(net, lm, tok, recipe.eval_rows, 10_000 + seed)
            print(f"  greedy after {update + 1} updates: {ret.mean():.1f} ({ret.mean() / v_star:.3f} V*)", flush=True)
    minutes = (time.perf_counter() - start) / 60
    ret = greedy_return(net, lm, tok, recipe.eval_rows, 10_000 + seed)
    return {"algo": algo, "seed": seed, "env_steps": collector.global_step, "episodes": episodes,
            "transcript_tokens": counter.tokens, "minutes": minutes, "first_return": first, "greedy": float(ret.mean()),
            "greedy_se": float(ret.std() / np.sqrt(ret.size)), "v_star": v_star, "ratio": float(ret.mean()) / v_star}


@dataclasses.dataclass(frozen=True)
class Args:
    seeds: tuple[int, ...] = (0,)
    algos: tuple[str, ...] = ("ppo",)
    out: str = "artifacts/catgrid-text"
    recipe: Recipe = Recipe()
    progress: bool = False
    eval_every: int = 0
    """with --progress: the greedy return every this many updates (0: only at the end)"""


def main() -> None:
    import tyro

    args = tyro.cli(Args)
    torch.set_num_threads(1)
    recipe = args.recipe
    print(f"{'algo':>6} {'seed':>4} {'env steps':>9} {'tokens':>9} {'episodes':>8} {'RL min':>6} {'greedy':>7} "
          f"{'/V*':>6}")
    for seed in args.seeds:
        sft_dir = Path(args.out) / (f"seed{seed}-p{recipe.optimal_prob}-n{recipe.transcripts}"
                                    f"-s{recipe.sft_steps}")
        if (sft_dir / "sft" / "config.json").exists():  # the same seed and SFT recipe: reuse its model
            lm, tok = load_model_and_tokenizer(str(sft_dir / "sft"))
        else:
            lm, tok = sft_model(sft_dir, seed, recipe)
        s = sft_start(lm, tok, seed, recipe)
        print(f"{'sft':>6} {seed:>4} {0:>9} {0:>9} {0:>8} {0:6.1f} {s['greedy']:7.1f} {s['ratio']:6.3f}", flush=True)
        for algo in args.algos:
            r = train(copy.deepcopy(lm), tok, algo, seed, recipe, progress=args.progress,
                      eval_every=args.eval_every)  # each from the SFT model
            print(f"{algo:>6} {seed:>4} {r['env_steps']:>9} {r['transcript_tokens']:>9} {r['episodes']:>8} "
                  f"{r['minutes']:6.1f} "
                  f"{r['greedy']:7.1f} {r['ratio']:6.3f}", flush=True)


if __name__ == "__main__":
    main()
