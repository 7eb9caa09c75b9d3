"""runners.train_reward: the pairwise loss, presets, files, and short runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from runners.common.cli import cli_with_presets
from runners.train_reward import (
    PRESETS,
    RewardConfig,
    pairwise_loss,
    preset_config,
    run_reward_training,
    score_texts,
    tiny_config,
)


def test_pairwise_loss_matches_hand_computed_values() -> None:
    # -log sigmoid(2) = log(1 + e^-2) = 0.126928; -log sigmoid(0) = log 2 = 0.693147; -log sigmoid(-1) = 1.313262
    loss = pairwise_loss(torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 0.0]))
    assert loss.item() == pytest.approx((0.126928 + 0.693147 + 1.313262) / 3, abs=1e-5)
    assert pairwise_loss(torch.tensor([100.0]), torch.tensor([0.0])).item() == pytest.approx(0.0, abs=1e-6)
    assert pairwise_loss(torch.tensor([-100.0]), torch.tensor([0.0])).item() == pytest.approx(100.0)  # stable
    r_c = torch.tensor([0.5], requires_grad=True)
    pairwise_loss(r_c, torch.tensor([0.5])).backward()
    assert r_c.grad.item() == pytest.approx(-0.5)  # d/dr_c = -(1 - sigmoid(0)); pushes r_chosen up
    with pytest.raises(ValueError, match="shapes"):
        pairwise_loss(torch.zeros(2), torch.zeros(3))


def test_bad_init_path_is_a_clear_error(tmp_path: Path, imdb_dir: Path) -> None:
    cfg = RewardConfig(init=str(tmp_path / "nope"), output_dir=str(tmp_path / "rm"), n_train_pairs=64,
                       n_eval_pairs=8, log_dir=str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="--init"):
        run_reward_training(cfg)


def test_presets() -> None:
    cfg = cli_with_presets(RewardConfig, PRESETS, ["--preset", "tiny", "--max-steps", "7"])
    assert (cfg.init, cfg.output_dir, cfg.max_steps) == ("artifacts/sft-tiny", "artifacts/rm-tiny", 7)
    assert preset_config("tiny-scratch").init is None
    assert tiny_config(max_steps=3) == preset_config("tiny", max_steps=3)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")


def test_reward_model_learns_a_preference_file(tmp_path: Path, tiny_lm_dir: Path) -> None:
    words = ["film", "plot", "cast", "story", "music", "ending", "script", "actor"]
    lines = [json.dumps({"prompt": "Review: ", "chosen": f"the {w} was excellent", "rejected": f"the {w} was dreadful"})
             for w in words * 20]
    (tmp_path / "prefs.jsonl").write_text("\n".join(lines) + "\n")
    cfg = RewardConfig(init=str(tiny_lm_dir), pairs=str(tmp_path / "prefs.jsonl"), output_dir=str(tmp_path / "rm"),
                       log_dir=str(tmp_path / "runs"), batch_size=16, learning_rate=3e-3, warmup_steps=2,
                       max_steps=20, eval_every=1000, max_length=16)
    metrics = run_reward_training(cfg)
    assert metrics["train_pairs"] == 152 and metrics["eval_pairs"] == 8  # 5% held out
    assert metrics["eval_accuracy"] == 1.0 and metrics["eval_loss"] < 0.3
    assert "eval_accuracy_short" not in metrics  # only for built IMDB pairs


def test_scaled_down_reward_model_beats_chance(tmp_path: Path, tiny_lm_dir: Path, imdb_dir: Path) -> None:
    out = tmp_path / "rm"
    cfg = RewardConfig(init=str(tiny_lm_dir), output_dir=str(out), log_dir=str(tmp_path / "runs"),
                       n_train_pairs=3000, n_eval_pairs=200, prefix_words=(16, 48), max_length=48,
                       batch_size=32, learning_rate=3e-3, warmup_steps=10, max_steps=80, eval_every=1000)
    metrics = run_reward_training(cfg)  # ~15 s on 2 free cores; measured accuracy 0.70 (short: 0.75)
    assert metrics["step"] == 80
    assert metrics["eval_accuracy"] > 0.62, metrics
    assert metrics["eval_accuracy_short"] > 0.62, metrics
    assert math.isfinite(metrics["reward_std"]) and metrics["reward_std"] > 0

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    assert tok.padding_side == "right"
    texts = ["A wonderful, moving film with brilliant acting.", "Terrible. A boring waste of time."]
    with torch.no_grad():
        batch = score_texts(model, tok, texts, 48, torch.device("cpu"))  # (2,), right-padded together
        alone = torch.stack([score_texts(model, tok, [t], 48, torch.device("cpu"))[0] for t in texts])
    assert torch.allclose(batch, alone, atol=1e-4)  # padding does not change a text's reward
    assert batch[0] > batch[1]
