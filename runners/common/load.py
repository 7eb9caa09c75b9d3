"""Load a trained run in one call, like Stable-Baselines3's ``PPO.load``::

    from runners import load_agent
    agent = load_agent("runs/CatGrid-v0__ppo__0__1732450000")
    action, _ = agent.predict(obs, deterministic=True)

The run's ``checkpoint/state.json`` says how to rebuild the network (env, its kwargs, network sizes); the weights
come from ``model.safetensors``. A run trained with in-memory objects (``env_overrides``) needs them again:
pass ``env_overrides={"model": ..., "tokenizer": ...}`` or a path, e.g. ``model="artifacts/sft"``. For text runs the
exported Hugging Face model (see ``runners.train``) is the artifact to share; this loads the full agent.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gymnasium as gym

from agents.agent import Agent
from runners.common import cli
from runners.common import run_dir as runs
from runners.common.checkpoint import checkpoint_dir, load_checkpoint, read_state
from runners.common.run_spec import TrainConfig, build_agent, make_envs, with_lora


def run_config(
    run_dir: str | Path, device: str = "auto", env_overrides: dict[str, Any] | None = None, **config_overrides: Any
) -> TrainConfig:
    """The ``TrainConfig`` of a run (a run dir, its ``checkpoint`` or a version dir) with ``config_overrides`` (None
    values ignored) applied; errors clearly when the run used in-memory objects that neither ``env_overrides`` nor
    ``config_overrides`` replace."""
    cfg = TrainConfig.from_dict(read_state(checkpoint_dir(run_dir))["config"])
    unknown = set(config_overrides) - {f.name for f in dataclasses.fields(cfg)}
    if unknown:
        raise TypeError(f"unknown TrainConfig fields {sorted(unknown)}")
    given = {key: value for key, value in config_overrides.items() if value is not None}
    cfg = dataclasses.replace(cfg, **(given | {"device": device}))
    runs.check_reloadable(cfg, env_overrides)
    return cfg


def load_run(
    run_dir: str | Path,
    device: str = "auto",
    env_overrides: dict[str, Any] | None = None,
    envs: gym.vector.VectorEnv | None = None,
    **config_overrides: Any,
) -> tuple[Agent, TrainConfig]:
    """The trained agent of ``run_dir`` (weights loaded, eval mode) and its ``TrainConfig``.

    ``config_overrides`` replace config fields (e.g. ``model="path"`` for a run trained on an in-memory model);
    ``envs`` (optional) is the vector env whose spaces build the network (default: a one-row env of the run).
    """
    cli.quiet_transformers()
    cfg = run_config(run_dir, device, env_overrides, **config_overrides)
    env_overrides = with_lora(cfg, env_overrides)  # a LoRA run: the same PeftModel shape the checkpoint holds
    own = envs is None
    envs = make_envs(cfg, num_envs=1, eval_mode=True, overrides=env_overrides) if own else envs
    try:
        agent = build_agent(cfg, envs, total_updates=None, model=(env_overrides or {}).get("model"))
    finally:
        if own:
            envs.close()
    load_checkpoint(checkpoint_dir(run_dir), agent, load_optimizer=False)
    agent.net.eval()
    return agent, cfg


def load_agent(run_dir: str | Path, device: str = "auto", env_overrides: dict[str, Any] | None = None,
               **config_overrides: Any) -> Agent:
    """The trained agent of a ``runners.train`` run (see :func:`load_run`)."""
    return load_run(run_dir, device, env_overrides, **config_overrides)[0]
