"""Tests of envs.lm: the incremental KV-cached decoder, model loading and reward functions."""

from __future__ import annotations

import huggingface_hub
import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from envs.lm import IncrementalLM, load_causal_lm, resolve_device
from envs.rewards import make_reward_fn

VOCAB = 64


def small_gpt2(attn: str, seed: int = 0) -> GPT2LMHeadModel:
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0, pad_token_id=1)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.set_attn_implementation(attn)
    return model


def left_pad(prompts: list[list[int] | None], width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, width) ids (random junk under the padding, which must be ignored) and mask; None rows are all junk."""
    ids = rng.integers(0, VOCAB, (len(prompts), width))
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for n, p in enumerate(prompts):
        if p:
            ids[n, width - len(p):] = p
            mask[n, width - len(p):] = 1
    return ids, mask


pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def full_hidden(model: GPT2LMHeadModel, seqs: list[list[int]]) -> torch.Tensor:
    """Last hidden state of each sequence by one teacher-forced forward, (N, D) (right padding: causal, so the
    padding after a sequence cannot change it)."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    hidden = model.base_model(ids).last_hidden_state  # (N, W, D)
    return hidden[torch.arange(len(seqs)), torch.tensor([len(s) - 1 for s in seqs])]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("max_len", [None, 8])
def test_incremental_matches_teacher_forcing(attn: str, max_len: int | None) -> None:
    """Rows restarting at different steps with different prompt lengths, over a run long enough for the ring
    cache to wrap around many times and to grow (rows reach 40 tokens; ``max_len=8`` starts too small)."""
    model = small_gpt2(attn)
    n_rows, width = 5, 12
    rng = np.random.default_rng(0)
    lm = IncrementalLM(model, n_rows, max_len=max_len)
    seqs: list[list[int]] = [[] for _ in range(n_rows)]
    max_err, widths, wrapped = 0.0, [], 0
    for t in range(120):
        restart = np.array([t == 0 or len(s) >= 40 or rng.random() < 0.07 for s in seqs])
        prompts = [list(rng.integers(0, VOCAB, rng.integers(1, width + 1))) if r else None for r in restart]
        ids, mask = left_pad(prompts, width, rng)
        tokens = torch.as_tensor(rng.integers(0, VOCAB, n_rows))
        for n in range(n_rows):
            seqs[n] = [int(x) for x in prompts[n]] if restart[n] else seqs[n] + [int(tokens[n])]
        col = lm._cache.col if lm._cache is not None else 0
        hidden = lm.step(None if restart.all() else tokens, restart, ids, mask)  # (N, D)
        wrapped += lm._cache.col < col
        widths.append(lm.cache_length)
        assert lm.lengths.tolist() == [len(s) for s in seqs]
        ref = full_hidden(model, seqs)  # (N, D)
        max_err = max(max_err, (hidden - ref).abs().max().item())
        assert (lm.head(hidden) - model.lm_head(ref)).abs().max().item() < 1e-4
    assert max_err < 1e-4
    assert wrapped >= 3  # the ring wrapped around: old columns were overwritten in place
    assert max(widths) <= 2 * 40  # bounded: grows by doubling only when the longest row does not fit
    if max_len is not None:
        assert widths[0] <= width < max(widths)  # started at the first prompts' width, then grew


def test_incremental_cache_is_preallocated() -> None:
    """With max_len, decoding writes into the same K/V storage every step (no per-step concatenation)."""
    model = small_gpt2("sdpa")
    lm = IncrementalLM(model, 2, max_len=12)
    lm.step(None, None, np.array([[3, 4], [0, 5]]), np.array([[1, 1], [0, 1]]))
    keys = lm._cache.layers[0].keys
    assert lm.cache_length == 12 and keys.shape[2] == 12
    for tok in range(10):
        lm.step(torch.tensor([tok, tok]), np.zeros(2, bool))
        assert lm._cache.layers[0].keys.data_ptr() == keys.data_ptr()
    assert lm.lengths.tolist() == [12, 11]


def test_incremental_all_restart_then_continue_equals_prefill() -> None:
    """Decoding token by token gives the same state as prefilling the whole sequence."""
    model = small_gpt2("sdpa")
    rng = np.random.default_rng(1)
    seq = [int(x) for x in rng.integers(0, VOCAB, 10)]
    a, b = IncrementalLM(model, 1), IncrementalLM(model, 1)
    a.step(None, None, np.array([seq[:3]]), np.ones((1, 3), np.int64))
    for tok in seq[3:]:
        h_a = a.step(torch.tensor([tok]), np.zeros(1, bool))
    h_b = b.step(None, None, np.array([seq]), np.ones((1, 10), np.int64))
    torch.testing.assert_close(h_a, h_b, atol=1e-5, rtol=0)


def test_incremental_restart_longer_than_cache() -> None:
    """A prompt wider than the whole cache grows the ring; the other rows are unaffected."""
    model = small_gpt2("sdpa")
    rng = np.random.default_rng(2)
    lm = IncrementalLM(model, 3, max_len=1)
    lm.step(None, None, np.array([[3], [4], [5]]), np.ones((3, 1), np.int64))
    assert lm.cache_length == 1
    long_prompt = [int(x) for x in rng.integers(0, VOCAB, 10)]
    ids, mask = left_pad([None, long_prompt, None], 10, rng)
    hidden = lm.step(torch.tensor([7, 0, 8]), np.array([False, True, False]), ids, mask)
    assert lm.cache_length >= 10 and lm.lengths.tolist() == [2, 10, 2]
    torch.testing.assert_close(hidden, full_hidden(model, [[3, 7], long_prompt, [5, 8]]), atol=1e-5, rtol=0)


def test_incremental_errors() -> None:
    lm = IncrementalLM(small_gpt2("sdpa"), 2)
    ids, mask = np.zeros((2, 3), np.int64), np.ones((2, 3), np.int64)
    with pytest.raises(ValueError, match="must restart every row"):
        lm.step(torch.zeros(2, dtype=torch.long), np.array([True, False]), ids, mask)
    with pytest.raises(ValueError, match="LEFT padded"):
        lm.step(None, None, ids, np.array([[1, 1, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match="at least one real token"):
        lm.step(None, None, ids, np.array([[0, 0, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match=r"\(num_rows=2, L\)"):
        lm.step(None, None, ids[:1], mask[:1])
    lm.step(None, None, ids, mask)
    with pytest.raises(ValueError, match="tokens must be"):
        lm.step(torch.zeros(3, dtype=torch.long), np.zeros(2, bool))
    with pytest.raises(ValueError, match="num_rows"):
        IncrementalLM(small_gpt2("sdpa"), 0)
    with pytest.raises(ValueError, match="max_len"):
        IncrementalLM(small_gpt2("sdpa"), 2, max_len=0)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_load_causal_lm_from_dir_and_objects(tiny_lm_dir, tiny_lm, tiny_tokenizer) -> None:
    model, tok = load_causal_lm(tiny_lm_dir, device="cpu")
    assert tok.padding_side == "left" and tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(model(ids).logits, tiny_lm(ids).logits)
    same, _ = load_causal_lm(tiny_lm, tiny_tokenizer, device="cpu")
    assert same is tiny_lm
    with pytest.raises(ValueError, match="tokenizer="):
        load_causal_lm(tiny_lm)
    with pytest.raises(TypeError, match="model must be"):
        load_causal_lm(3)


def test_tokenizer_without_pad_uses_eos(tiny_lm_dir) -> None:
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(tiny_lm_dir)
    raw.pad_token = None
    _, tok = load_causal_lm(tiny_lm_dir, tokenizer=raw, device="cpu")
    assert tok.pad_token_id == tok.eos_token_id and tok.padding_side == "left"


def test_missing_model_offline_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="To run offline.*runners.sft"):
        load_causal_lm("no-such-org/no-such-model")
    with pytest.raises(OSError, match="no model directory there"):
        load_causal_lm("./no/such/model/dir")


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


def test_fuse_gelu_same_function_one_kernel() -> None:
    from transformers.activations import GELUTanh, NewGELUActivation

    from envs.lm import fuse_gelu

    model = small_gpt2("sdpa")
    ids = torch.as_tensor(np.random.default_rng(3).integers(0, VOCAB, (2, 9)))
    keys = set(model.state_dict())
    with torch.no_grad():
        before = model(ids).logits
        fused = fuse_gelu(model)
        after = fused(ids).logits
    assert fused is model and set(model.state_dict()) == keys
    assert not any(isinstance(m, NewGELUActivation) for m in model.modules())
    assert sum(isinstance(m, GELUTanh) for m in model.modules()) == model.config.n_layer
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
