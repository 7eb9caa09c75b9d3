"""The LM runtime on every supported architecture: the teacher-forced pass and the ring-cached decode give
``model(ids).logits`` of each unpadded sequence (logit post-processing and sliding windows included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lm_zoo import FAMILIES, WINDOW, tiny_model

from envs.lm import IncrementalLM, forward_left_padded
from envs.lm.logits import LogitsHead, check_logits_path, sliding_window

TOL = 1e-4


def left_pad(seqs: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((len(seqs), width), np.int64)
    mask = np.zeros((len(seqs), width), np.int64)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):], mask[i, width - len(s):] = s, 1
    return ids, mask


def plain_logits(model, seq: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([seq])).logits[0]  # (len, V)


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_and_teacher_forcing_equal_plain_forward(family: str, one_thread) -> None:
    model = tiny_model(family)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, 256, size=n).tolist() for n in (2, 6, 9)]
    width = 16  # prompt + decoded tokens, 3-4 windows long
    lm = IncrementalLM(model, 3, max_len=width)
    ids, mask = left_pad(seqs, width)
    hidden = lm.step(None, None, ids, mask)
    err = 0.0
    for t in range(6):
        for r, s in enumerate(seqs):
            err = max(err, float((lm.head(hidden[r]) - plain_logits(model, s)[-1]).abs().max()))
        nxt = rng.integers(3, 256, size=3)
        restart = np.array([t == 2, False, False])  # row 0 starts over with a new prompt mid-way
        for r in range(3):
            seqs[r] = rng.integers(3, 256, size=5).tolist() if restart[r] else seqs[r] + [int(nxt[r])]
        ids, mask = left_pad(seqs, width)
        hidden = lm.step(torch.as_tensor(nxt), restart, ids, mask)
    assert err < TOL
    ids, mask = left_pad(seqs, width)
    with torch.no_grad():
        tf = lm.head(forward_left_padded(model, torch.as_tensor(ids), torch.as_tensor(mask)))  # (3, L, V)
    for r, s in enumerate(seqs):
        assert float((tf[r, width - len(s):] - plain_logits(model, s)).abs().max()) < TOL
    assert max(len(s) for s in seqs) > WINDOW


def test_sliding_window_is_read_from_the_config() -> None:
    assert sliding_window(tiny_model("mistral")) == (WINDOW, None)
    assert sliding_window(tiny_model("gemma2"))[1] == ["sliding_attention", "full_attention"]
    assert sliding_window(tiny_model("qwen3")) == (None, None)  # no sliding layer: one full mask


def test_logit_post_processing_is_applied() -> None:
    model = tiny_model("gemma2")
    head = LogitsHead(model)
    h = torch.randn(5, 32)
    assert float(head(h).abs().max()) <= 2.0  # soft-capped at final_logit_softcapping
    assert torch.allclose(LogitsHead(tiny_model("granite"))(h), tiny_model("granite").lm_head(h) / 0.25)


def test_an_unknown_logits_path_is_refused() -> None:
    model = tiny_model("llama")
    model.config.logits_scaling = 3.0  # the head would divide, the model's forward does not
    with pytest.raises(ValueError, match="differ from model"):
        check_logits_path(model, LogitsHead(model), forward_left_padded)
    with pytest.raises(ValueError, match="differ from model"):
        IncrementalLM(model, 2)
