"""Tests of envs.lm.kv_cache: the incremental ring-buffer KV-cached decoder against teacher forcing, its
preallocated cache and errors, its prefills grouped by length (envs.lm.compute), and the fused GELU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import GELUTanh, NewGELUActivation

from envs.lm import IncrementalLM, fuse_gelu
from envs.lm.compute import length_groups

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


def test_length_groups_minimise_padded_tokens_plus_pass_cost() -> None:
    # 63 rows of 8 tokens and one of 19: one pass 64·19 + 64 = 1280 padded tokens, two 63·8 + 64 + 19 + 64 = 651
    assert [g.tolist() for g in length_groups(np.array([19] + [8] * 63))] == [list(range(1, 64)), [0]]
    assert [g.tolist() for g in length_groups(np.array([100, 3]), pass_cost=10)] == [[1], [0]]  # 123 < 210
    assert [g.tolist() for g in length_groups(np.array([3, 2, 3]), pass_cost=10)] == [[0, 1, 2]]  # 19 < 28
    # pass cost 2: {2,2} {5} {9,9}: 4+5+18 + 3·2 = 33 < {2,2} {5,9,9}: 35 < {2,2,5} {9,9}: 37 < all: 47
    assert [g.tolist() for g in length_groups(np.array([9, 2, 5, 9, 2]), pass_cost=2)] == [[1, 4], [2], [0, 3]]


def test_prefill_of_mixed_lengths_is_one_pass_per_group_and_exact() -> None:
    """Six 2-token prompts and two 40-token ones restart together: two prefills (one per length group, the short
    rows never padded to 40), the same hidden states as plain forwards, and decoding continues exactly."""
    model = small_gpt2("sdpa")
    rng = np.random.default_rng(4)
    seqs = [[int(x) for x in rng.integers(0, VOCAB, 40 if n in (2, 5) else 2)] for n in range(8)]
    ids, mask = left_pad(seqs, 40, rng)
    lm = IncrementalLM(model, 8, max_len=48)
    torch.testing.assert_close(lm.step(None, None, ids, mask), full_hidden(model, seqs), atol=1e-5, rtol=0)
    assert lm.passes == {"decode": 0, "prefill": 2}
    for _ in range(3):
        tokens = rng.integers(0, VOCAB, 8)
        seqs = [s + [int(t)] for s, t in zip(seqs, tokens)]
        hidden = lm.step(torch.as_tensor(tokens), np.zeros(8, bool))
        torch.testing.assert_close(hidden, full_hidden(model, seqs), atol=1e-5, rtol=0)


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


def test_fuse_gelu_same_function_one_kernel() -> None:
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
