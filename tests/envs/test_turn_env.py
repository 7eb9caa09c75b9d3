"""The multi-turn token env over a string-level turn env: spec, single = vector, exact reference log-probs, turn
rewards on the turn's last token, the context limit, and the append-only KV cache against one teacher-forced pass."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from turn_helpers import EOT, GuessDigit, env_kwargs, tiny_lm, tokenizer

from envs.lm import forward_left_padded
from envs.lm.append_cache import AppendLM, right_padded
from envs.turn_env import TurnTokenEnv, TurnTokenVectorEnv


def _actions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random tokens, ~30% the end of turn (so turns end by EOT and by the cap), ~30% a digit (turns that win)."""
    eot = tokenizer()(EOT, add_special_tokens=False)["input_ids"][0]
    digits = np.array([tokenizer()(str(d), add_special_tokens=False)["input_ids"][0] for d in range(4)])
    u = rng.random(n)
    return np.where(u < 0.3, eot, np.where(u < 0.6, rng.choice(digits, n), rng.integers(0, len(tokenizer()), n)))


def test_check_env_is_clean() -> None:
    check_env(TurnTokenEnv(**env_kwargs()), skip_render_check=True)


def test_append_lm_equals_one_teacher_forced_pass() -> None:
    """Rows extended by 1-4 tokens at a time, restarting at random, with the cache growing: the last hidden state
    equals one pass over each row's whole sequence."""
    model, rng = tiny_lm(), np.random.default_rng(0)
    lm = AppendLM(model, 3, max_len=4)
    seqs: list[list[int]] = [[] for _ in range(3)]
    for it in range(8):
        rows = np.arange(3) if it == 0 else np.sort(rng.choice(3, size=int(rng.integers(1, 4)), replace=False))
        restart = np.ones(rows.size, bool) if it == 0 else rng.random(rows.size) < 0.2
        chunks = [rng.integers(0, 280, size=int(rng.integers(1, 5))) for _ in rows]
        for r, rs, c in zip(rows, restart, chunks):
            seqs[r] = list(c) if rs else seqs[r] + list(c)
        hidden = lm.extend(rows, *right_padded(chunks), restart)
        for i, r in enumerate(rows):
            ids = torch.tensor([seqs[r]])
            want = forward_left_padded(model, ids, torch.ones_like(ids))[0, -1]
            assert torch.allclose(hidden[i], want, atol=1e-5), (it, r)
    with pytest.raises(ValueError, match="restart first"):
        AppendLM(model, 2).extend(np.array([0]), np.array([[1]]), np.array([1]), np.array([False]))


def test_vector_env_equals_single_envs_on_the_same_seeds() -> None:
    n, rng = 3, np.random.default_rng(1)
    vec = TurnTokenVectorEnv(n, **env_kwargs())
    singles = [TurnTokenEnv(**env_kwargs()) for _ in range(n)]
    obs, _ = vec.reset(seed=5)
    single_obs = [s.reset(seed=5 + i)[0] for i, s in enumerate(singles)]
    done, ends = np.zeros(n, bool), 0
    for _ in range(40):
        for i in range(n):
            for key in obs:
                np.testing.assert_array_equal(obs[key][i], single_obs[i][key])
        actions = _actions(rng, n)
        obs, reward, term, trunc, info = vec.step(actions)
        for i, s in enumerate(singles):
            if done[i]:  # NEXT_STEP autoreset: the vector row starts its next episode, reward 0
                single_obs[i], _ = s.reset()
                assert reward[i] == 0.0 and not term[i] and not trunc[i]
                continue
            single_obs[i], r, te, tr, row_info = s.step(actions[i])
            assert (r, te, tr) == pytest.approx((reward[i], term[i], trunc[i]), abs=1e-6)
            assert row_info["ref_logprob"] == pytest.approx(info["ref_logprob"][i], abs=1e-6)
        done = term | trunc
        ends += int(done.sum())
    assert ends >= 6  # several episodes ended (and restarted) in every comparison


def _ref_logprobs(ids: list[int], agent: np.ndarray) -> np.ndarray:
    """log π_ref of each agent token of a transcript from one teacher-forced pass."""
    model = tiny_lm()
    t = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(t).logits[0].double(), -1)  # (L, V)
    pos = np.flatnonzero(agent)
    return logp[pos - 1, t[0, pos]].numpy()


def test_reference_logprobs_turn_rewards_and_layout() -> None:
    """Per step: ``ref_logprob`` equals one teacher-forced pass over the whole transcript (env tokens in the context,
    KV cache continued across turns); the reward is β·log π_ref plus the TurnEnv's reward on the turn's last token
    only; agent_mask marks exactly the actions."""
    n, beta, rng = 4, 0.1, np.random.default_rng(2)
    vec = TurnTokenVectorEnv(n, **env_kwargs(kl_coef=beta))
    obs, _ = vec.reset(seed=0)
    refs: list[list[float]] = [[] for _ in range(n)]
    acts: list[list[int]] = [[] for _ in range(n)]
    checked = turn_rewards = 0
    for _ in range(30):
        actions = _actions(rng, n)
        prev = obs
        obs, reward, term, trunc, info = vec.step(actions)
        for i in range(n):
            if not info["_ref_logprob"][i]:  # a reset step: the new episode starts
                refs[i], acts[i] = [], []
                continue
            refs[i].append(info["ref_logprob"][i])
            acts[i].append(int(actions[i]))
            extra = reward[i] - beta * info["ref_logprob"][i]
            assert extra == 0.0 or info["turn_end"][i]  # TurnEnv rewards only where a turn ends
            turn_rewards += extra != 0.0
            k = int(prev["attention_mask"][i].sum())
            ids = prev["input_ids"][i, -k:].tolist() + [int(actions[i])]  # the transcript through this action
            agent = np.r_[prev["agent_mask"][i, -k:], 1].astype(bool)
            assert [ids[p] for p in np.flatnonzero(agent)] == acts[i]
            np.testing.assert_allclose(_ref_logprobs(ids, agent), refs[i], atol=1e-5)
            checked += 1
    assert checked > 80 and turn_rewards >= 2


def test_context_limit_truncates_and_env_turns_are_appended() -> None:
    env = TurnTokenEnv(**env_kwargs(max_context=16, env_fn=lambda: GuessDigit(max_turns=20)))
    obs, _ = env.reset(seed=0)
    eot = tokenizer()(EOT, add_special_tokens=False)["input_ids"][0]
    digit_free = tokenizer()("x", add_special_tokens=False)["input_ids"][0]  # never names the secret
    lengths, info, trunc = [int(obs["attention_mask"].sum())], {}, False
    for a in [digit_free, eot] * 6:
        obs, _, term, trunc, info = env.step(a)
        lengths.append(int(obs["attention_mask"].sum()))
        assert not term
        if trunc:
            break
    assert trunc and info["context_limit"]
    assert max(np.diff(lengths)) > 1  # an env turn came in with an agent token
    assert lengths[-1] <= 16
    with pytest.raises(RuntimeError, match="reset"):
        env.step(eot)


def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="one token"):
        TurnTokenEnv(**env_kwargs(end_of_turn="guess a digit"))
    with pytest.raises(ValueError, match="max_context"):
        TurnTokenEnv(**env_kwargs(max_context=1))
    vec = TurnTokenVectorEnv(2, **env_kwargs())
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(np.zeros(2, dtype=np.int64))
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        vec.step(np.zeros(3, dtype=np.int64))
    assert isinstance(GuessDigit().reset(seed=0)[0], str)


def test_chat_template_renders_every_env_turn_as_a_user_message() -> None:
    tok = copy.deepcopy(tokenizer())
    with pytest.raises(ValueError, match="chat template"):
        TurnTokenEnv(**env_kwargs(chat_template=True))
    tok.chat_template = ("{% for m in messages %}<{{ m.role }}>: {{ m.content }}{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>:{% endif %}")
    env = TurnTokenEnv(**env_kwargs(tokenizer=tok, chat_template=True))
    obs, _ = env.reset(seed=0)
    eot = tok(EOT, add_special_tokens=False)["input_ids"][0]
    obs, *_ = env.step(eot)  # an empty turn: the env answers with a hint, rendered the same way
    text = env.render() if env.render_mode else env.core.texts()[0]
    assert text.startswith("<user>: guess a digit") and text.count("<assistant>:") == 2
    agent = obs["agent_mask"][obs["attention_mask"].astype(bool)]
    assert agent.sum() == 1  # the template's tokens are the env's
