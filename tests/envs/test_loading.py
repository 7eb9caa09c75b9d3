"""Tests of envs.lm.loading: device choice, loading a causal LM and its tokenizer (directories, objects, a
tokenizer without pad token) and the offline error."""

from __future__ import annotations

import huggingface_hub
import pytest
import torch
from transformers import AutoTokenizer

from envs.lm import load_causal_lm, resolve_device

pytestmark = pytest.mark.usefixtures("one_thread")


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
    raw = AutoTokenizer.from_pretrained(tiny_lm_dir)
    raw.pad_token = None
    raw.padding_side = "right"
    _, tok = load_causal_lm(tiny_lm_dir, tokenizer=raw, device="cpu")
    assert tok.pad_token_id == tok.eos_token_id and tok.padding_side == "left"
    assert raw.pad_token is None and raw.padding_side == "right"  # the caller's tokenizer is left as it was


def test_missing_model_offline_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="To run offline.*runners.sft"):
        load_causal_lm("no-such-org/no-such-model")
    with pytest.raises(OSError, match="no model directory there"):
        load_causal_lm("./no/such/model/dir")
