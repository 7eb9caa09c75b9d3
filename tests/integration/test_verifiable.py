"""A verifiable-reward task learned on CPU (slow): reasoning-gym arithmetic, SFT then GRPO on TextGen-v0, and the
held-out accuracy rises above the SFT start by more than 3 standard errors (of the difference)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("reasoning_gym")

from runners.verifiable import VerifiableConfig, run  # noqa: E402


@pytest.mark.slow
def test_grpo_raises_held_out_accuracy_above_the_sft_start(tmp_path, one_thread):
    f = run(VerifiableConfig(preset="tiny", out_dir=str(tmp_path)))
    (before, se_before), (after, se_after) = f["before_greedy"], f["after_greedy"]
    gain, se = after - before, math.sqrt(se_before**2 + se_after**2)
    assert gain > 3 * se, f
    assert f["kl"] is not None and 0 < f["kl"] < 5.0  # the policy moved, and stayed near its reference
