"""CatGrid-Text-v0: registered, check_env clean, its token transcript is the SFT transcript's tokenization, its
moves are CatGrid's, and its target is the turn MDP's exact optimum."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from turn_helpers import catgrid_lm

import envs  # noqa: F401
from envs.catgrid_text import CatGridTextEnv, CatGridTextVectorEnv
from envs.catgrid_turns import CatGridTurnEnv
from envs.imdb import clean_review
from envs.transcripts import Transcript, transcript_text


def _kw(**kw):
    lm, tok = catgrid_lm()
    return {"model": lm, "tokenizer": tok, "device": "cpu", "kl_coef": 0.0} | kw


def test_registered_check_env_clean_and_optimum() -> None:
    env = gym.make("CatGrid-Text-v0", **_kw())
    check_env(env.unwrapped, skip_render_check=True)
    vec = gym.make_vec("CatGrid-Text-v0", num_envs=2, vectorization_mode="vector_entry_point", **_kw())
    assert isinstance(vec, CatGridTextVectorEnv)
    assert vec.optimal_start_return() == pytest.approx(CatGridTurnEnv(max_turns=12).optimal_start_return())
    assert isinstance(gym.make("MultiTurn-v0", env_fn=CatGridTurnEnv, **_kw(end_of_turn=";")).unwrapped,
                      gym.Env)


def test_token_transcript_is_the_sft_transcript() -> None:
    """Played word by word, the env's token context equals the tokenization of transcript_text (the SFT layout, unchanged by the SFT loader),
    the rewards are the turn env's (seeded alike), and a turn naming no move costs invalid_penalty."""
    lm, tok = catgrid_lm()
    env = CatGridTextEnv(**_kw())
    twin = CatGridTurnEnv(max_turns=12)
    obs, _ = env.reset(seed=3)
    texts, words, rewards = [twin.reset(seed=3)[0]], [], []
    rng = np.random.default_rng(0)
    done = False
    while not done:
        word = str(rng.choice(["up", "down", "left", "right", "x"]))
        ids = tok(word + ";", add_special_tokens=False)["input_ids"]
        total = 0.0
        for i in ids:
            obs, r, term, trunc, info = env.step(i)
            total += r
            done = term or trunc
        text, want, t_term, t_trunc, _ = twin.step(word)
        assert (total, term, trunc) == pytest.approx((want, t_term, t_trunc))
        texts.append(text)
        words.append(word)
        rewards.append(want)
    t = Transcript(tuple(texts), tuple(words), tuple(rewards), bool(term), bool(trunc))
    k = int(obs["attention_mask"].sum())
    context = obs["input_ids"][-k:].tolist()  # the final observation holds the last action too
    text = transcript_text(t, ";", ">")
    assert context == tok(text, add_special_tokens=False)["input_ids"]
    assert clean_review(text) == text  # the SFT stage reads the transcript unchanged (it collapses whitespace)
    assert -1.0 in [r for r, w in zip(rewards, words) if w == "x"]
