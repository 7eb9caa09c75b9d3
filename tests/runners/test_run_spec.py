"""runners.common.run_spec: TrainConfig is frozen, --algo is the one switch of the agent's algorithm."""

from __future__ import annotations

import dataclasses

import pytest

from runners import train


def test_train_parses_algo_into_the_agent_config():
    cfg = train.parse_args(["--algo", "reinforce"])
    assert cfg.algo == cfg.agent.algo == "reinforce"


def test_config_is_frozen_and_replace_keeps_the_agent_algo_in_step():
    cfg = train.preset("CatGrid-v0", "ppo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    other = dataclasses.replace(cfg, algo="reinforce")
    assert other.agent.algo == "reinforce" and cfg.agent.algo == "ppo"  # the original is untouched
    assert train.TrainConfig(algo="reinforce").agent.algo == "reinforce"
    assert train.TrainConfig.from_dict(other.saved()) == other
