"""runners.common.tiny_lm: the tokenizer trained on the spot and the seeded tiny GPT-2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from runners.common.tiny_lm import EOS_TOKEN, PAD_TOKEN, make_tiny_lm, train_tokenizer


def test_tokenizer_special_tokens_and_round_trip(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    assert len(tok) == 8192
    assert tok.eos_token == tok.bos_token == tok.unk_token == EOS_TOKEN
    assert tok.pad_token == PAD_TOKEN and tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"
    text = "This movie was GREAT, 10/10 - I'd watch it again! Ünïcode ☺ too."
    ids = tok(text)["input_ids"]
    assert tok.eos_token_id not in ids  # no special tokens added implicitly
    assert tok.decode(ids) == text
    assert len(ids) < len(text) / 2  # merges learned: far fewer tokens than characters
    batch = tok(["short", "a somewhat longer text"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == tok.pad_token_id  # left padding
    assert batch["attention_mask"][0, 0].item() == 0


def test_train_tokenizer_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no texts"):
        train_tokenizer([], vocab_size=300)
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["hello"], vocab_size=100)


def test_make_tiny_lm_is_seeded_and_leaves_global_rng_alone(tiny_tokenizer) -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = make_tiny_lm(tiny_tokenizer, seed=5, n_layer=1, n_embd=32, n_head=2)
    assert torch.rand(1).item() == expected.item()
    b = make_tiny_lm(tiny_tokenizer, seed=5, n_layer=1, n_embd=32, n_head=2)
    c = make_tiny_lm(tiny_tokenizer, seed=6, n_layer=1, n_embd=32, n_head=2)
    wa, wb, wc = (m.transformer.h[0].attn.c_attn.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    cfg = a.config
    assert (cfg.vocab_size, cfg.eos_token_id, cfg.pad_token_id) == (8192, tiny_tokenizer.eos_token_id,
                                                                    tiny_tokenizer.pad_token_id)
    with pytest.raises(ValueError, match="divisible"):
        make_tiny_lm(tiny_tokenizer, n_embd=30, n_head=4)


def test_tiny_lm_dir_loads_with_auto_classes(tiny_lm_dir: Path, tiny_lm) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd) == (2, 4, 128)
    assert tok.pad_token_id != tok.eos_token_id and tok.padding_side == "left"
    x = tok(["a fine movie"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(x).logits, tiny_lm(x).logits, atol=1e-5)
