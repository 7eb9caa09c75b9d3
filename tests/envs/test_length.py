"""Tests of envs.length, the length controls of TextGen-IMDB-v0: the per-episode length sampler and the EOS
mask, and in the env: min_new_tokens with an action mask, sampled limits, the missing-EOS penalty, and the
masked reference log-probs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from envs.imdb import load_imdb
from envs.length import LengthSampler, action_mask
from envs.textgen import TextGenEnv
from envs.textgen_vector import TextGenVectorEnv

pytestmark = pytest.mark.usefixtures("one_thread")


def no_score(texts: list[str]) -> list[float]:
    return [0.0] * len(texts)


@pytest.fixture(scope="module")
def texts(imdb_dir) -> list[str]:
    return [row["text"] for row in load_imdb("train", source=imdb_dir, limit=200, seed=2)]


@pytest.fixture
def kw(tiny_lm, tiny_tokenizer, texts) -> dict:
    return {"model": tiny_lm, "tokenizer": tiny_tokenizer, "reward_model": no_score, "dataset": texts,
            "device": "cpu", "kl_coef": 0.0}


def eos_lover(mask: np.ndarray, eos: int, rng: np.random.Generator) -> np.ndarray:
    """Emit EOS whenever the mask allows it, else a random allowed token: (N,) actions for (N, V) masks."""
    actions = np.empty(mask.shape[0], dtype=np.int64)
    for i, row in enumerate(mask):
        allowed = np.flatnonzero(row)
        actions[i] = eos if row[eos] else rng.choice(allowed)
    return actions


def test_length_sampler_and_mask_helpers() -> None:
    rng = np.random.default_rng(0)
    fixed = LengthSampler(16)
    state = rng.bit_generator.state
    assert fixed.fixed and fixed.sample(rng, 3).tolist() == [16, 16, 16]
    assert rng.bit_generator.state == state  # a fixed length draws nothing: old seeds keep their prompts
    draws = LengthSampler((4, 6)).sample(rng, 3000)
    assert set(draws.tolist()) == {4, 5, 6} and abs(np.mean(draws == 6) - 1 / 3) < 0.04  # inclusive, uniform
    for bad in (0, (5, 4), (0, 3), "16", (1, 2, 3), 2.5, True):
        with pytest.raises(ValueError, match="max_new_tokens"):
            LengthSampler(bad)
    m = action_mask(np.array([True, False]), eos_token_ids=2, vocab_size=5)
    assert m.dtype == np.int8 and m.tolist() == [[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]]


def test_vector_env_never_ends_on_eos_before_min_new_tokens(kw, tiny_tokenizer) -> None:
    env = TextGenVectorEnv(16, max_new_tokens=(6, 9), min_new_tokens=4, **kw)
    eos, rng = tiny_tokenizer.eos_token_id, np.random.default_rng(0)
    obs, info = env.reset(seed=0)
    assert info["action_mask"].shape == (16, len(tiny_tokenizer)) and info["_action_mask"].all()
    assert (info["action_mask"][:, eos] == 0).all() and info["action_mask"].sum() == 16 * (len(tiny_tokenizer) - 1)
    lengths, eos_ends = [], 0
    for _ in range(120):
        actions = eos_lover(info["action_mask"], eos, rng)
        obs, _, term, _, info = env.step(actions)
        for i in np.flatnonzero(term):
            lengths.append(int(info["new_tokens"][i]))
            eos_ends += int(actions[i] == eos)
    # as HF generate(min_new_tokens=4): four tokens, then EOS is the fifth at the earliest
    assert len(lengths) > 100 and min(lengths) == 5 and eos_ends == len(lengths)

    # a policy that never says EOS runs to each episode's own limit, drawn from 6..9
    env = TextGenVectorEnv(16, max_new_tokens=(6, 9), min_new_tokens=4, **kw)
    obs, info = env.reset(seed=1)
    lengths = []
    for _ in range(150):
        mask = info["action_mask"].copy()
        mask[:, eos] = 0
        obs, _, term, _, info = env.step(eos_lover(mask, eos, rng))
        lengths.extend(int(n) for n in info["new_tokens"][term])
    assert set(lengths) == {6, 7, 8, 9}


def test_masked_action_raises_and_leaves_the_env_usable(kw, tiny_tokenizer) -> None:
    eos = tiny_tokenizer.eos_token_id
    env = TextGenEnv(max_new_tokens=5, min_new_tokens=2, **kw)
    obs, info = env.reset(seed=0)
    assert info["action_mask"].shape == (len(tiny_tokenizer),) and info["action_mask"][eos] == 0
    with pytest.raises(ValueError, match="min_new_tokens=2.*action_mask"):
        env.step(eos)
    _, _, term, _, info = env.step(7)
    assert not term and info["new_tokens"] == 1 and info["action_mask"][eos] == 0
    _, _, term, _, info = env.step(7)
    assert info["action_mask"][eos] == 1  # two tokens generated: EOS allowed from now on
    _, _, term, _, info = env.step(eos)
    assert term and info["new_tokens"] == 3
    venv = TextGenVectorEnv(3, max_new_tokens=5, min_new_tokens=2, **kw)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        venv.step(np.array([7, eos, 7]))
    for bad in ({"min_new_tokens": 6}, {"min_new_tokens": -1}, {"max_new_tokens": (4, 8), "min_new_tokens": 5},
                {"missing_eos_penalty": float("nan")}):
        with pytest.raises(ValueError):
            TextGenEnv(**(kw | {"max_new_tokens": 5} | bad))


def test_default_env_allows_everything_and_keeps_its_seeded_stream(kw) -> None:
    a, b = TextGenVectorEnv(4, **kw), TextGenVectorEnv(4, max_new_tokens=(16, 16), **kw)
    oa, ia = a.reset(seed=5)
    ob, ib = b.reset(seed=5)
    assert ia["action_mask"].all() and np.array_equal(oa["input_ids"], ob["input_ids"])


def test_missing_eos_penalty_only_without_eos(kw, tiny_tokenizer) -> None:
    eos = tiny_tokenizer.eos_token_id
    env = TextGenEnv(max_new_tokens=3, missing_eos_penalty=1.5, **kw)
    env.reset(seed=0)
    rewards = [env.step(7)[1] for _ in range(3)]
    assert rewards == [0.0, 0.0, -1.5]
    env.reset(seed=0)
    assert env.step(7)[1] == 0.0 and env.step(eos)[1] == 0.0


@torch.no_grad()
def test_reference_logprob_is_renormalised_under_the_mask(kw, tiny_lm, tiny_tokenizer) -> None:
    eos = tiny_tokenizer.eos_token_id
    env = TextGenEnv(max_new_tokens=4, min_new_tokens=2, **(kw | {"kl_coef": 0.5}))
    obs, _ = env.reset(seed=3)
    prompt = obs["input_ids"][obs["attention_mask"].astype(bool)].tolist()
    actions = [11, 12, 13]
    got = [env.step(a)[4]["ref_logprob"] for a in actions]
    logits = tiny_lm(torch.tensor([prompt + actions])).logits[0].double()  # (len, V)
    for t, a in enumerate(actions):
        row = logits[len(prompt) - 1 + t].clone()
        if t < 2:
            row[eos] = -float("inf")  # masked step: the reference renormalised over the allowed tokens
        assert got[t] == pytest.approx(row.log_softmax(-1)[a].item(), abs=1e-5)  # p(EOS) ~ 1e-4 here


def test_every_eos_id_of_the_generation_config_ends_and_is_masked(kw, tiny_lm, tiny_tokenizer) -> None:
    """The Llama-3-Instruct pattern: generation_config.eos_token_id = [eos, 808]. Both end an episode, both are
    masked before min_new_tokens, and the reference is renormalised without both."""
    eos, other = tiny_tokenizer.eos_token_id, 808
    model = copy.deepcopy(tiny_lm)
    model.generation_config.eos_token_id = [eos, other]
    env = TextGenVectorEnv(4, **(kw | {"model": model}), max_new_tokens=6, min_new_tokens=2)
    assert env.eos_token_ids.tolist() == sorted([eos, other])
    obs, info = env.reset(seed=0)
    assert (info["action_mask"][:, [eos, other]] == 0).all() and info["action_mask"].sum() == 4 * (len(tiny_tokenizer) - 2)
    with pytest.raises(ValueError, match="masked action"):
        env.step(np.array([other, 5, 5, 5]))
    actions = np.array([7, 5, 9, 11])
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(obs["input_ids"][:1][:, -int(obs["attention_mask"][0].sum()):])).logits
    logits = logits[0, -1].double()
    logits[[eos, other]] = -np.inf
    _, _, _, _, info = env.step(actions)
    assert abs(info["ref_logprob"][0] - float(torch.log_softmax(logits, -1)[7])) < 1e-4  # renormalised without both
    env.step(np.array([5, 5, 5, 5]))  # 2 new tokens: EOS allowed from now on
    _, _, term, _, info = env.step(np.array([other, eos, 5, 5]))
    assert term.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="eos_token_ids"):
        TextGenVectorEnv(2, **kw, eos_token_ids=[10**6])
    assert TextGenVectorEnv(2, **kw, eos_token_ids=[other]).eos_token_ids.tolist() == [other]
