"""Tests of envs.rewards: callables (checked results), VADER, sequence classifiers (positive-class logit, labels,
saved directories) and what is not a reward model."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

import envs  # noqa: F401  (registers the envs)
from envs.rewards import make_reward_fn

pytestmark = pytest.mark.usefixtures("one_thread")


def test_reward_callable_and_checks() -> None:
    fn = make_reward_fn(lambda texts: [len(t) for t in texts])
    np.testing.assert_array_equal(fn(["ab", "abcd"]), [2.0, 4.0])
    assert fn([]).shape == (0,)

    def short(texts):
        return [1.0]

    def broken(texts):
        return [float("nan")] * len(texts)

    with pytest.raises(ValueError, match="'short' returned 1 scores for 2 texts"):
        make_reward_fn(short)(["a", "b"])
    with pytest.raises(ValueError, match="'broken' returned a NaN"):
        make_reward_fn(broken)(["a"])
    with pytest.raises(TypeError, match="reward_model must be"):
        make_reward_fn(3)
    with pytest.raises(ValueError, match="batch_size"):
        make_reward_fn(short, batch_size=0)


@pytest.mark.parametrize(("result", "shown"), [
    ("0.5", "str"), ([True, False], "bool"), ({"a": 1.0}, "dict"), (None, "NoneType"),
    ((x for x in [1.0, 2.0]), "generator"), ([1 + 2j, 0j], "complex"), (True, "bool"), (["a", "b"], "str"),
])
def test_reward_callable_results_are_checked(result, shown):
    def my_reward(texts):
        return result

    fn = make_reward_fn(my_reward)
    with pytest.raises(TypeError, match=rf"Reward function 'my_reward' returned .*{shown}.*2 real numbers"):
        fn(["a", "b"])


def test_reward_callable_good_results_pass():
    for result in ([1, 2], (1.0, 2), np.array([1.0, 2.0], dtype=np.float32), torch.tensor([1.0, 2.0])):
        np.testing.assert_array_equal(make_reward_fn(lambda t, r=result: r)(["a", "b"]), [1.0, 2.0])


def test_reward_vader() -> None:
    pytest.importorskip("vaderSentiment")
    fn = make_reward_fn("vader")
    good, bad, neutral = fn(["This movie was wonderful, I loved it!", "Terrible, boring and awful.", "A movie."])
    assert good > 0.5 and bad < -0.5 and abs(neutral) < 0.1


def _classifier(tokenizer, num_labels: int, id2label: dict[int, str] | None = None) -> GPT2ForSequenceClassification:
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                        num_labels=num_labels, pad_token_id=tokenizer.pad_token_id)
    if id2label:
        config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    torch.manual_seed(0)
    return GPT2ForSequenceClassification(config).eval()


@pytest.mark.parametrize(
    ("num_labels", "id2label", "column"),
    [(1, None, 0), (2, {0: "NEGATIVE", 1: "POSITIVE"}, 1), (2, {0: "pos", 1: "neg"}, 0), (2, None, 1)],
)
def test_reward_classifier_scores_positive_logit(tiny_tokenizer, tmp_path, num_labels, id2label, column) -> None:
    clf = _classifier(tiny_tokenizer, num_labels, id2label)
    texts = ["a great film", "bad", "it was fine I guess, nothing more"]
    batch = tiny_tokenizer(texts, padding=True, padding_side="right", return_tensors="pt")
    with torch.no_grad():
        expected = clf(**batch).logits[:, column].numpy()
    fn = make_reward_fn(clf, tokenizer=tiny_tokenizer, device="cpu", batch_size=2)
    np.testing.assert_allclose(fn(texts), expected, atol=1e-5)
    clf.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    np.testing.assert_allclose(make_reward_fn(str(tmp_path), device="cpu")(texts), expected, atol=1e-5)


def test_reward_classifier_needs_tokenizer_and_positive_label(tiny_tokenizer) -> None:
    with pytest.raises(ValueError, match="tokenizer="):
        make_reward_fn(_classifier(tiny_tokenizer, 1))
    three = _classifier(tiny_tokenizer, 3, {0: "a", 1: "b", 2: "c"})
    with pytest.raises(ValueError, match="positive class"):
        make_reward_fn(three, tokenizer=tiny_tokenizer)


def test_causal_lm_dir_is_not_a_reward_model(tiny_lm_dir, tiny_lm, tiny_tokenizer):
    with pytest.raises(ValueError, match=rf"{tiny_lm_dir}.*not a trained sequence-classification.*Accepted reward"):
        make_reward_fn(str(tiny_lm_dir), device="cpu")
    with pytest.raises(ValueError, match="GPT2LMHeadModel, not a sequence classifier"):
        make_reward_fn(tiny_lm, tokenizer=tiny_tokenizer, device="cpu")


def test_reward_model_dir_written_by_the_trainer_is_accepted(tmp_path, tiny_tokenizer):
    from runners.common.pretrained import save_pretrained_atomic

    config = GPT2Config(vocab_size=len(tiny_tokenizer), n_layer=1, n_head=2, n_embd=32, n_positions=64,
                        num_labels=1, pad_token_id=tiny_tokenizer.pad_token_id or 0)
    save_pretrained_atomic(GPT2ForSequenceClassification(config), tiny_tokenizer, tmp_path / "rm")
    assert make_reward_fn(str(tmp_path / "rm"), device="cpu")(["good movie"]).shape == (1,)


def test_reward_classifier_object_with_its_own_tokenizer(tiny_tokenizer, tiny_lm, tmp_path) -> None:
    """A classifier object comes with reward_tokenizer= (not the policy's tokenizer=) or as a (model, tokenizer)
    pair, through gym.make too; a path loads in reward_dtype."""
    clf = _classifier(tiny_tokenizer, 1)
    texts = ["a great film", "bad"]
    want = make_reward_fn(clf, tokenizer=tiny_tokenizer, device="cpu")(texts)
    np.testing.assert_allclose(make_reward_fn((clf, tiny_tokenizer), device="cpu")(texts), want)
    with pytest.raises(ValueError, match=r"reward_tokenizer=.*\(model, tokenizer\)"):
        make_reward_fn(clf, device="cpu")
    env = gym.make("TextGen-IMDB-v0", model=tiny_lm, tokenizer=tiny_tokenizer, reward_model=clf,
                   reward_tokenizer=tiny_tokenizer, dataset=texts * 4, device="cpu", prompt_min_len=1)
    np.testing.assert_allclose(env.unwrapped.core.reward_fn(texts), want)
    clf.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    half = make_reward_fn(str(tmp_path), device="cpu", dtype="bfloat16")
    np.testing.assert_allclose(half(texts), want, atol=0.05 * max(1.0, float(np.abs(want).max())))
    with pytest.raises(ValueError, match="reward_dtype"):
        make_reward_fn(clf, tokenizer=tiny_tokenizer, dtype="bfloat16")
