"""GEM's GuessTheNumber, installed from PyPI, trained through the multi-turn token env by the one agent.

A tiny GPT-2 is SFT'd from scratch with the project's SFT stage on legal transcripts (half of the guesses read the
hints, half ignore them), then PPO (γ = 1, no KL) trains it on ``game:GuessTheNumber-v0-easy`` (short texts:
``envs.interop.gem.ShortGuessTheNumber``); the sampled policy's mean return must rise above the SFT start's by more
than 3 standard errors. Skipped without gem-llm (CI installs it with ``.[dev]``).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.agent import Agent, AgentConfig
from agents.networks import build_network
from agents.rollout import RolloutCollector
from envs.interop.gem import guess_policy, make_guess_the_number
from envs.transcripts import play_transcripts, transcript_text, write_transcripts
from envs.turn_env import TurnTokenVectorEnv
from runners.sft import load_model_and_tokenizer, run_sft, tiny_config

pytest.importorskip("gem")

EOT, PROMPT = ";", ">"  # no whitespace at turn boundaries: the SFT stage's loader collapses whitespace
UPDATES, NUM_ENVS, NUM_STEPS, EVAL_ROLLOUTS = 20, 32, 48, 6


def _sft(out: Path) -> tuple[torch.nn.Module, object]:
    played = play_transcripts(make_guess_the_number, lambda e: guess_policy(e, informed_prob=0.5), 600, seed=0)
    data = write_transcripts(out / "transcripts.jsonl", [transcript_text(t, EOT, PROMPT) for t in played])
    run_sft(tiny_config(data=str(data), output_dir=str(out / "sft"), log_dir=str(out / "runs"), max_train_reviews=None,
                        eval_reviews=50, block_size=64, batch_size=16, learning_rate=5e-3, warmup_steps=10,
                        max_steps=150, eval_every=10_000, vocab_size=300, tokenizer_reviews=600, n_layer=2, n_head=2,
                        n_embd=64, num_samples=0, seed=0, num_threads=1, device="cpu"))
    return load_model_and_tokenizer(str(out / "sft"))


def _mean_return(collector: RolloutCollector) -> tuple[float, float]:
    """Mean return of the episodes the current policy finishes in EVAL_ROLLOUTS rollouts, and its standard error."""
    returns: list[float] = []
    for _ in range(EVAL_ROLLOUTS):
        returns += collector.collect()[1].returns
    return float(np.mean(returns)), float(np.std(returns) / np.sqrt(len(returns)))


@pytest.mark.slow
def test_ppo_on_gem_guess_the_number_beats_the_sft_start(tmp_path, one_thread) -> None:
    lm, tok = _sft(tmp_path)
    venv = gym.wrappers.vector.RecordEpisodeStatistics(TurnTokenVectorEnv(
        NUM_ENVS, env_fn=make_guess_the_number, model=lm, tokenizer=tok, max_turn_tokens=3, end_of_turn=EOT,
        env_suffix=PROMPT, max_context=96, kl_coef=0.0, device="cpu"))
    torch.manual_seed(0)  # before the value head's initialisation: the same run every time
    net = build_network(venv.single_observation_space, venv.single_action_space, lm=lm)
    agent = Agent(net, AgentConfig(algo="ppo", gamma=1.0, learning_rate=1e-3, update_epochs=4, num_minibatches=4,
                                   ent_coef=0.0))
    torch.manual_seed(0)
    collector = RolloutCollector(venv, agent, NUM_STEPS, seed=0)
    before, se_before = _mean_return(collector)
    for _ in range(UPDATES):
        agent.update(collector.collect()[0])
    after, se_after = _mean_return(collector)
    print(f"GEM GuessTheNumber mean return {before:.3f} ± {se_before:.3f} (SFT) -> {after:.3f} ± {se_after:.3f} (PPO)")
    assert after - before > 3 * np.hypot(se_before, se_after), (before, se_before, after, se_after)
