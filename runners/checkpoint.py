"""Checkpoints: network weights as safetensors, optimizer state, and the run config as JSON.

A checkpoint is a directory::

    model.safetensors   the policy/value network (shared tensors handled by safetensors)
    optimizer.pt        Adam state (for --resume)
    state.json          {"config": ..., "global_step": ..., "num_updates": ..., "network": ...}

It is written into a temporary sibling directory and moved into place with ``os.replace``,
so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from agents.agent import Agent

STATE_FILE = "state.json"


def save_checkpoint(path: str | Path, agent: Agent, config: dict[str, Any], global_step: int, **extra: Any) -> Path:
    """Atomically write ``agent`` (weights, optimizer, counters) and ``config`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        save_model(agent.net, str(tmp / "model.safetensors"))
        torch.save(agent.optimizer.state_dict(), tmp / "optimizer.pt")
        state = {
            "config": config,
            "global_step": int(global_step),
            "num_updates": int(agent.num_updates),
            "network": type(agent.net).__name__,
            **extra,
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, default=str))
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_state(path: str | Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint directory, with a clear error if it is not one."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{path} is not a checkpoint directory (expected {STATE_FILE} and model.safetensors; "
            "checkpoints are written by `python -m runners.train` under <run dir>/checkpoint)"
        )
    return json.loads(state_file.read_text())


def load_checkpoint(path: str | Path, agent: Agent, load_optimizer: bool = True) -> dict[str, Any]:
    """Load weights (and optimizer state) into ``agent``; returns the checkpoint state."""
    path = Path(path)
    state = read_state(path)
    if state["network"] != type(agent.net).__name__:
        raise ValueError(f"checkpoint holds a {state['network']}, the agent has a {type(agent.net).__name__}")
    load_model(agent.net, str(path / "model.safetensors"), device=str(agent.device))
    if load_optimizer and (path / "optimizer.pt").is_file():
        agent.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=agent.device))
    agent.num_updates = int(state["num_updates"])
    return state
