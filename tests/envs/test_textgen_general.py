"""TextGen-v0: whole prompts from a dataset column, chat templates, reward functions that see the prompt, the
completion and the row's other columns, several weighted rewards and None for rows they do not apply to."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from env_helpers import real_tokens
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers TextGen-v0)
from envs.rewards import RewardSet

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>:{% endif %}")
ROWS = [{"prompt": f"Calculate {a} + {b}.", "answer": str(a + b), "id": 10 * a + b} for a in range(4) for b in range(5)]


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = TEMPLATE
    return tok


def make(tiny_lm, tokenizer, num_envs: int | None = None, **kw):
    kw = {"model": tiny_lm, "tokenizer": tokenizer, "dataset": ROWS, "device": "cpu", "max_new_tokens": 3,
          "reward_model": lambda texts: [0.0] * len(texts), **kw}
    if num_envs is None:
        return gym.make("TextGen-v0", **kw)
    return gym.make_vec("TextGen-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", **kw)


def test_check_env_plain_prompts_and_chat_template(tiny_lm, tiny_tokenizer, chat_tokenizer):
    env = make(tiny_lm, tiny_tokenizer)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert tiny_tokenizer.decode(real_tokens(obs)) in {r["prompt"] for r in ROWS}  # the whole prompt
    messages = [{"prompt": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": r["prompt"]}],
                 "answer": r["answer"]} for r in ROWS]
    chat = make(tiny_lm, chat_tokenizer, dataset=messages)
    check_env(chat.unwrapped, skip_render_check=True)
    obs, _ = chat.reset(seed=3)
    text = chat_tokenizer.decode(real_tokens(obs))
    assert text.startswith("<system>: Be exact.\n<user>: Calculate ") and text.endswith(".\n<assistant>:")
    wrapped = make(tiny_lm, chat_tokenizer, chat_template=True)  # string prompts as one user message
    obs, _ = wrapped.reset(seed=0)
    assert chat_tokenizer.decode(real_tokens(obs)).startswith("<user>: Calculate ")


def test_reward_inputs_arrive_aligned_row_by_row(tiny_lm, tiny_tokenizer):
    by_prompt = {r["prompt"]: r for r in ROWS}
    calls = []

    def exact(prompts, completions, answer, id):  # names two of the columns, no **kwargs
        assert len(prompts) == len(completions) == len(answer) == len(id)
        for p, a, i in zip(prompts, answer, id):
            assert by_prompt[p]["answer"] == a and by_prompt[p]["id"] == i  # the same row's columns
        calls.append((list(prompts), list(completions)))
        return [float(i) for i in id]  # the score identifies the row

    env = make(tiny_lm, tiny_tokenizer, num_envs=6, reward_model=exact, group_size=2, max_new_tokens=(1, 3))
    env.reset(seed=0)
    rng, finished = np.random.default_rng(0), 0
    for _ in range(12):
        _, _, term, _, info = env.step(rng.integers(0, 500, 6))
        for r in np.flatnonzero(term):
            finished += 1
            row = by_prompt[info["prompt"][r]]
            assert info["score"][r] == row["id"] and info["reward/exact"][r] == row["id"]
    assert finished >= 6 and sum(len(p) for p, _ in calls) == finished
    decoded = [c for _, cs in calls for c in cs]
    assert any(c for c in decoded)  # completions are the decoded responses (not empty strings)


def test_weighted_reward_functions_and_none(tiny_lm, tiny_tokenizer):
    def sometimes(prompts, completions, **columns):  # None: not applicable to odd ids
        return [None if i % 2 else 1.0 for i in columns["id"]]

    def length(texts):  # the list[str] form: prompt + completion
        assert all(t.startswith("Calculate ") for t in texts)
        return [float(len(t)) for t in texts]

    env = make(tiny_lm, tiny_tokenizer, num_envs=4, reward_model=[sometimes, length], reward_weights=[2.0, 0.5])
    env.reset(seed=1)
    seen = set()
    for _ in range(8):
        _, _, term, _, info = env.step(np.full(4, 7))
        for r in np.flatnonzero(term):
            row = next(x for x in ROWS if x["prompt"] == info["prompt"][r])
            n = len(info["text"][r])
            applies = row["id"] % 2 == 0
            assert info["score"][r] == pytest.approx((2.0 if applies else 0.0) + 0.5 * n)
            assert bool(info["_reward/sometimes"][r]) == applies and info["reward/length"][r] == n
            seen.add(applies)
    assert seen == {True, False}
    never = RewardSet([lambda prompts, completions: [None] * len(prompts)])
    with pytest.raises(ValueError, match="every reward function returned None"):
        never(["p"], ["c"], ["pc"], {})
    with pytest.raises(ValueError, match="reward_weights must be 2"):
        RewardSet([length, sometimes], weights=[1.0])
    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        RewardSet(lambda prompts, completions: [1.0])(["a", "b"], ["c", "d"], ["ac", "bd"], {})


def test_prompt_cap_context_and_bad_arguments(tiny_lm, tiny_tokenizer, chat_tokenizer):
    long_rows = ROWS + [{"prompt": "word " * 300, "answer": "0", "id": -1}]  # longer than the 256-token context
    with pytest.raises(ValueError, match="pass max_prompt_len=<at most 253>"):
        make(tiny_lm, tiny_tokenizer, dataset=long_rows)
    env = make(tiny_lm, tiny_tokenizer, dataset=long_rows, max_prompt_len=20)
    core = env.unwrapped.core
    assert core.num_dropped_prompts == 1 and len(core.rows) == len(ROWS)
    lengths = [len(tiny_tokenizer(r["prompt"])["input_ids"]) for r in ROWS]
    assert core.prompt_max_len == max(lengths) and env.observation_space["input_ids"].shape == (max(lengths) + 3,)
    with pytest.raises(TypeError, match="prompt_max_len= is TextGen-IMDB-v0's; use max_prompt_len"):
        make(tiny_lm, tiny_tokenizer, prompt_max_len=8)
    with pytest.raises(ValueError, match="has no 'question' field"):
        make(tiny_lm, tiny_tokenizer, prompt_field="question")
    with pytest.raises(ValueError, match="no chat template"):
        make(tiny_lm, tiny_tokenizer, dataset=[{"prompt": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(ValueError, match="needs reward_model="):
        make(tiny_lm, tiny_tokenizer, reward_model=None)


def test_state_restores_the_prompt_rows(tiny_lm, tiny_tokenizer):
    ids = []
    env = make(tiny_lm, tiny_tokenizer, num_envs=2, reward_model=lambda p, c, id: ids.append(list(id)) or id)
    env.reset(seed=0)
    state = env.unwrapped.get_state()
    env.step(np.full(2, 5))
    env.step(np.full(2, 5))
    env.step(np.full(2, 5))
    env.reset(seed=9)  # other prompts
    env.unwrapped.set_state(state)
    env.step(np.full(2, 5))
    env.step(np.full(2, 5))
    env.step(np.full(2, 5))
    assert len(ids) == 2 and ids[0] == ids[1]


def test_reference_logprobs_at_the_sampling_temperature(tiny_lm, tiny_tokenizer):
    env = make(tiny_lm, tiny_tokenizer, temperature=0.5)
    obs, _ = env.reset(seed=2)
    prompt = real_tokens(obs)
    got = [env.step(a)[4]["ref_logprob"] for a in (11, 12)]
    with torch.no_grad():
        logits = tiny_lm(torch.tensor([prompt + [11, 12]])).logits[0].double() / 0.5
    want = logits.log_softmax(-1)[[len(prompt) - 1, len(prompt)], [11, 12]].numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        make(tiny_lm, tiny_tokenizer, temperature=0.0)
