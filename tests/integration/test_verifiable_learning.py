"""runners.verifiable learning (slow): GRPO with the exact-match reward raises the held-out accuracy of the SFT
model on reasoning-gym arithmetic (a smaller run than the documented preset, one seed)."""

from __future__ import annotations

import pytest

from runners import verifiable

pytest.importorskip("reasoning_gym")


@pytest.mark.slow
def test_grpo_raises_held_out_accuracy_above_the_sft_start(tmp_path, one_thread):
    cfg = verifiable.VerifiableConfig(out_dir=str(tmp_path), eval_problems=1000, sft_steps=400, updates=150,
                                      learning_rate=1e-4)
    f = verifiable.run(cfg)
    (before, _), (after, _), (d, se) = f["before_sampled"], f["after_sampled"], f["gain_sampled"]
    assert 0.1 < before < 0.25  # the SFT start answers some problems: RL has something to sharpen
    assert d > 0.03 and d > 2.5 * se, (before, after, se)  # the metric fixed in advance: one sample at T = 1
    assert f["gain_greedy"][0] > -0.01, f["gain_greedy"]  # greedy decoding does not get worse
    assert 0 < f["kl"] < 2.0 and f["rl_env_steps"] == 150 * 64 * 4
