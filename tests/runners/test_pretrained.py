"""runners.common.pretrained: a Hugging Face model directory is replaced all at once, and survives a failed save."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from runners.common.pretrained import save_pretrained_atomic
from runners.common.tiny_lm import make_tiny_lm


def test_save_pretrained_atomic_replaces_and_survives_a_crash(tmp_path: Path, tiny_tokenizer) -> None:
    target = tmp_path / "m"
    first = make_tiny_lm(tiny_tokenizer, seed=0, n_layer=1, n_embd=32, n_head=2)
    second = make_tiny_lm(tiny_tokenizer, seed=1, n_layer=1, n_embd=32, n_head=2)
    save_pretrained_atomic(first, tiny_tokenizer, target)
    save_pretrained_atomic(second, tiny_tokenizer, target, extra=lambda d: (d / "note.txt").write_text("hi"))
    assert (target / "note.txt").read_text() == "hi"
    loaded = AutoModelForCausalLM.from_pretrained(target)
    assert torch.equal(loaded.transformer.wte.weight, second.transformer.wte.weight)

    def crash(_: Path) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_pretrained_atomic(first, tiny_tokenizer, target, extra=crash)
    still = AutoModelForCausalLM.from_pretrained(target)  # the previous version is intact
    assert torch.equal(still.transformer.wte.weight, second.transformer.wte.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dirs left behind
