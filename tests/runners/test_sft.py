"""runners.sft: packing, a scaled-down run, reload, resume, presets and errors (the schedule, determinism and
crash safety it shares with the reward stage: test_supervised.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from runners.common.cli import cli_with_presets
from runners.sft import PRESETS, SFTConfig, pack_blocks, run_sft, tiny_config


def test_pack_blocks_appends_eos_and_drops_the_remainder() -> None:
    blocks = pack_blocks([[1, 2, 3], [4], [5, 6]], eos_id=0, block_size=4)
    assert blocks.tolist() == [[1, 2, 3, 0], [4, 0, 5, 6]]  # trailing eos of the last review dropped
    with pytest.raises(ValueError, match="not enough text"):
        pack_blocks([[1]], eos_id=0, block_size=8)


def _small(tiny_lm_dir: Path, review_file: Path, out: Path, **kw) -> SFTConfig:
    base = dict(model=str(tiny_lm_dir), data=str(review_file), output_dir=str(out), log_dir=str(out.parent / "runs"),
                eval_split="test", eval_reviews=40, block_size=64, batch_size=8, learning_rate=3e-3,
                warmup_steps=5, eval_every=10, num_samples=2, sample_tokens=8, max_steps=40)
    base.update(kw)
    return SFTConfig(**base)


def test_scaled_down_sft_learns_saves_and_resumes(tmp_path: Path, tiny_lm_dir: Path, review_file: Path) -> None:
    out = tmp_path / "sft"
    m1 = run_sft(_small(tiny_lm_dir, review_file, out))
    assert m1["step"] == 40
    assert m1["eval_perplexity"] < 0.5 * m1["initial_eval_perplexity"]  # random init ~ vocab size 8192
    assert len(m1["samples"]) == 2 and all(isinstance(s, str) and s for s in m1["samples"])
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.pad_token_id != tok.eos_token_id
    assert json.loads((out / "metrics.json").read_text())["step"] == 40
    assert list((tmp_path / "runs" / "sft" / "sft").glob("events.out.tfevents.*"))

    m2 = run_sft(_small(tiny_lm_dir, review_file, out, resume=True, max_steps=50))
    assert m2["step"] == 50
    assert m2["initial_eval_perplexity"] == m1["initial_eval_perplexity"]  # carried over from the checkpoint
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert state["step"] == 50 and state["optimizer"]["state"]  # Adam moments restored and saved
    resumed = AutoModelForCausalLM.from_pretrained(out)
    assert not torch.equal(resumed.transformer.wte.weight, model.transformer.wte.weight)


def test_preset_tiny_trains_its_own_tokenizer(tmp_path: Path, review_file: Path) -> None:
    cfg = tiny_config(data=str(review_file), output_dir=str(tmp_path / "scratch"), log_dir=str(tmp_path / "runs"),
                      max_train_reviews=None, tokenizer_reviews=200, vocab_size=1000, n_layer=1, n_embd=32,
                      n_head=2, block_size=32, batch_size=4, max_steps=3, max_minutes=None, eval_reviews=10,
                      num_samples=1, sample_tokens=4)
    metrics = run_sft(cfg)
    assert metrics["step"] == 3 and metrics["vocab_size"] == 1000
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "scratch").config.n_layer == 1


def test_sft_errors_are_clear(tmp_path: Path, tiny_lm_dir: Path, review_file: Path) -> None:
    with pytest.raises(ValueError, match="--preset tiny"):
        run_sft(SFTConfig(output_dir=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="cannot load a causal LM"):
        run_sft(_small(tmp_path / "no-such-model", review_file, tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="not found"):
        run_sft(_small(tiny_lm_dir, tmp_path / "missing.jsonl", tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="--resume"):
        run_sft(_small(tiny_lm_dir, review_file, tmp_path / "fresh", resume=True))
    with pytest.raises(ValueError, match="block_size"):
        run_sft(_small(tiny_lm_dir, review_file, tmp_path / "x", block_size=512))


def test_cli_preset_sets_defaults_and_flags_override_them() -> None:
    cfg = cli_with_presets(SFTConfig, PRESETS, ["--preset", "tiny", "--max-steps", "5"])
    assert (cfg.preset, cfg.output_dir, cfg.max_steps, cfg.model) == ("tiny", "artifacts/sft-tiny", 5, None)
    assert cli_with_presets(SFTConfig, PRESETS, ["--model", "gpt2"]).output_dir == "artifacts/sft"
